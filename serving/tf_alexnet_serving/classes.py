"""The served model's class names, and the check of a configured `CLASS_NAMES` against them.

The local backend reads every name from the model's `assets/class_names.txt`. TF Serving does
not serve assets: there the number of classes comes from the model's metadata (the width of its
`probabilities` output) and each name from the model's own `class_name` output, as answers
arrive. A configured list fills the names not seen yet, and is refused as soon as it disagrees
with the model: by its length at start-up, or by any name the model reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tf_alexnet_serving.errors import UpstreamError


class ClassNames:
    """Index -> name for the served model version; `problem` says why the facade refuses."""

    def __init__(self, configured: Sequence[str] | None) -> None:
        self.configured = tuple(configured) if configured is not None else None
        self.count: int | None = None
        self._problem: str | None = None
        self._logged: str | None = None  # the last problem logged
        self._names: list[str | None] = []
        self._from_model: list[bool] = []

    @property
    def problem(self) -> str | None:
        return self._problem

    @problem.setter
    def problem(self, problem: str | None) -> None:
        """Logged as found, once (TF Serving's names are learnt after start-up, and each
        version's again)."""
        if problem is not None and problem != self._logged:
            logging.getLogger("tf_alexnet_serving").error("Not ready: %s", problem)
            self._logged = problem
        self._problem = problem

    def reset(self, count: int | None, names: Sequence[str] | None = None) -> None:
        """A model (version) with `count` classes and, when it says, all their names."""
        self._problem = None
        self.count = len(names) if names is not None else count
        if names is not None and count is not None and len(names) != count:
            self.problem = (
                f"The served model is inconsistent: {count} classes but {len(names)} class names."
            )
        size = self.count or 0
        self._names = list(names) if names is not None else [None] * size
        self._from_model = [names is not None] * size
        if self.configured is None or self.problem:
            return
        if self.count is not None and len(self.configured) != self.count:
            self.problem = (
                f"CLASS_NAMES has {len(self.configured)} names but the served model has "
                f"{self.count} classes; unset it to use the model's own names. "
                f"Received: CLASS_NAMES={list(self.configured)}"
            )
        elif names is not None:
            for index, (model_name, name) in enumerate(zip(names, self.configured, strict=True)):
                if model_name != name:
                    self.problem = _disagreement(index, model_name, name)
                    break
        else:
            self._names = list(self.configured)

    def learn(self, class_id: int, name: str) -> bool:
        """Records the model's name for `class_id`; False when a name learnt earlier differs
        (a new model version, most likely). Raises UpstreamError(503) when CLASS_NAMES does."""
        if class_id < 0:
            return False
        if class_id >= len(self._names):
            grow = class_id + 1 - len(self._names)
            self._names += [None] * grow
            self._from_model += [False] * grow
        known = self._names[class_id]
        if known is not None and known != name:
            if self._from_model[class_id]:
                return False
            self.problem = _disagreement(class_id, name, known)
            raise UpstreamError(503, self.problem)
        self._names[class_id] = name
        self._from_model[class_id] = True
        return True

    def name(self, class_id: int) -> str | None:
        return self._names[class_id] if 0 <= class_id < len(self._names) else None

    def as_list(self) -> list[str | None]:
        return list(self._names)


@dataclasses.dataclass(frozen=True)
class Answer:
    """One image's scores, with the version and class names of the model that computed them."""

    probabilities: Any  # a 1-D numpy array, one score per class
    version: int
    names: ClassNames


async def learn_names(
    names: ClassNames,
    count: int | None,
    probe: Callable[[list[bytes]], Awaitable[list[tuple[int, str]]]],
) -> None:
    """`names` for a newly served version of `count` classes (None: not known yet), with the
    names the model gives the probe images (`probe`: TF Serving's (class id, name) for each).
    Raises UpstreamError when TF Serving does not answer; when it refuses the probe, the names
    come with the answers instead."""
    names.reset(count)
    if names.problem:
        return
    try:
        pairs = await probe(probe_images())
    except UpstreamError as err:
        if err.status != 400:  # TF Serving lists the version but does not answer with it
            raise
        return
    with contextlib.suppress(UpstreamError):  # a disagreement is kept in names.problem
        for class_id, name in pairs:
            names.learn(class_id, name)


def _disagreement(index: int, model_name: str, configured: str) -> str:
    return (
        f"CLASS_NAMES disagrees with the served model: class {index} is {model_name!r} in the "
        f"model but {configured!r} in CLASS_NAMES; unset it to use the model's own names."
    )


def probe_images() -> list[bytes]:
    """A few tiny PNGs (plain grays, stripes): their answers teach the first class names."""
    images = []
    for pixels in ([0], [255], [128], [0, 255, 255, 0], [255, 0, 255, 0], [64, 192, 192, 64]):
        side = 1 if len(pixels) == 1 else 2
        rows = b"".join(b"\x00" + bytes(pixels[i * side : (i + 1) * side]) for i in range(side))
        images.append(_png(side, rows))
    return images


def _png(side: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
