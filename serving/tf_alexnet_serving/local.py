"""The local backend: the exported SavedModel run in process, micro-batched (the default).

Like TF Serving with its default version policy, it serves the highest version in
`BASE/NAME` and looks for a new one every `model_poll_s` seconds: a new version is loaded and
warmed up beside the old one, then swapped in between two batches. A version that fails to
load is logged and skipped until its files change; the version served before stays.
With no version left, the one in memory is still served. Each answer carries the version
and class names of the model that computed it, so a swap never mislabels an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import time
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from tf_alexnet import contract, startup
from tf_alexnet.errors import UserError
from tf_alexnet.exported import (
    SAVED_MODEL_FILE,
    ExportedModel,
    model_names,
    version_folder,
    version_numbers,
)
from tf_alexnet.image_header import image_size
from tf_alexnet_serving.batching import DeadlineExceeded, MicroBatcher, QueueFull
from tf_alexnet_serving.classes import Answer, ClassNames, probe_images
from tf_alexnet_serving.errors import UpstreamError
from tf_alexnet_serving.heap import collect_all
from tf_alexnet_serving.logs import ModelEvents
from tf_alexnet_serving.settings import Settings


def local_model_folders(settings: Settings) -> list[pathlib.Path]:
    """The SavedModel folders the local backend may serve, the one it tries first first: the
    pinned version, else every version from the highest down (a broken newest one must not
    keep the server from starting on the one below). Raises UserError when there is none."""
    base_path = pathlib.Path(settings.model_base_path)
    model_dir = base_path / settings.model_name
    if not model_dir.exists() and (others := model_names(base_path)):
        raise UserError(
            f"No model named {settings.model_name!r} in {str(base_path)!r}; it holds "
            f"{', '.join(map(repr, others))}. Pass --model-name (or set "
            "TF_ALEXNET_SERVE_MODEL_NAME)."
        )
    if not model_dir.exists():
        misplaced(base_path, settings.model_name)
    newest = version_folder(model_dir, settings.model_version)
    if settings.model_version is not None or newest.parent != model_dir:
        return [newest]  # pinned, or a version folder given as the model folder
    return [model_dir / str(version) for version in reversed(version_numbers(model_dir))]


def misplaced(base_path: pathlib.Path, model_name: str) -> None:
    """UserError naming the base path to pass when `base_path` is a model folder (it holds
    versions) or a version folder: `--model-base-path models/alexnet`, the folder `tf-alexnet
    export` names, was refused as "No exported SavedModel at 'models/alexnet/alexnet'", with
    no word of the folder one level up."""
    from tf_alexnet.run_dir import RunDir

    given = base_path.resolve() if base_path.name in ("", "..") else base_path  # `.`, `..`
    if RunDir(given).is_run():  # said only "No exported SavedModel at 'runs/x/alexnet'"
        raise UserError(
            f"{str(base_path)!r} is a training run, not a model base path: export it first "
            f"(tf-alexnet export {str(base_path)!r} writes models/{model_name}/1), then pass "
            "--model-base-path models (or set TF_ALEXNET_SERVE_MODEL_BASE_PATH)."
        )
    if versions := version_numbers(given):
        model_folder, what = given, f"a model folder (versions {_listed(versions)})"
    elif (given / SAVED_MODEL_FILE).is_file():
        model_folder, what = given.parent, "a version folder"
    else:
        return
    parent = model_folder.parent
    name = "" if model_folder.name == model_name else f" --model-name {model_folder.name}"
    raise UserError(
        f"{str(base_path)!r} is {what}, not a model base path (which holds models, each a "
        f"folder of versions): pass --model-base-path {str(parent)!r}{name} (or set "
        "TF_ALEXNET_SERVE_MODEL_BASE_PATH)."
    )


def _listed(versions: list[int]) -> str:
    """`1, 2, 3`, or `1, 2, ..., 9` past three versions."""
    shown = [str(v) for v in versions]
    return ", ".join(shown if len(shown) <= 3 else [*shown[:2], "...", shown[-1]])


Stamp = tuple[tuple[str, int, int, int], ...]
"""A version folder's files as found (path, inode, size, mtime). Another stamp under the same
number is another model (removed and published again), and a folder that failed to load is
tried again once it changes (a `cp -r` caught halfway, then finished)."""


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One version in memory: what runs it and what labels its answers."""

    version: int
    signature: Callable[..., Any]
    names: ClassNames
    metadata: dict[str, Any]
    stamp: Stamp


class LocalBackend:
    """Runs the exported SavedModel's bytes signature in process, micro-batched."""

    unavailable_reason = ""  # ready from the start: it does not start without a model

    def __init__(self, settings: Settings, on_batch: Any = None, on_latency: Any = None) -> None:
        import tensorflow as tf

        from tf_alexnet.hardware import enable_bf16_rewrite

        self.bf16 = enable_bf16_rewrite(settings.bf16)  # before the model's functions first run
        self.name = settings.model_name
        self._tf = tf
        self._settings = settings
        self._model_dir = pathlib.Path(settings.model_base_path) / settings.model_name
        self._refused: set[Stamp] = set()  # failed to load: not tried again as they are
        self._events = ModelEvents(self.name, "local")
        start = time.perf_counter()
        self._loaded = self._load_first(local_model_folders(settings))
        self._load_s = time.perf_counter() - start  # reported with the warm-up, in `start`
        self.memory_pool = startup.memory_pool()
        self._missing_logged = False
        self._poller: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self._on_latency = on_latency
        self._batcher = MicroBatcher(
            self._run,
            settings.max_batch_size,
            settings.max_batch_wait_ms / 1000,
            on_batch,
            max_queue=settings.max_queue,
            timeout_s=settings.timeout_s,
            cost=decoded_pixels,  # a model call decodes and shrinks its images first
            max_batch_cost=settings.max_batch_pixels,
        )

    @property
    def version(self) -> int:
        return self._loaded.version

    @property
    def names(self) -> ClassNames:
        return self._loaded.names

    def _load_first(self, folders: list[pathlib.Path]) -> LoadedVersion:
        """The first of `folders` that loads; each that does not is logged and refused until
        its files change. Raises UserError when none loads."""
        failures = []
        for folder in folders:
            try:
                return self._load(folder)
            except Exception as err:  # a damaged or half-copied version: try the one below
                failures.append(f"version {folder.name}: {_one_line(err)}")
                with contextlib.suppress(OSError):
                    self._refused.add(_stamp(folder))
                version = int(folder.name) if folder.name.isdigit() else folder.name
                self._event("load_failed", version=version, serving=None, error=_one_line(err))
        raise UserError(f"No version in {str(self._model_dir)!r} loads: {'; '.join(failures)}")

    def _load(self, folder: pathlib.Path) -> LoadedVersion:
        exported = ExportedModel(folder)
        stamp = _stamp(folder)
        signature = exported.signature(contract.SIGNATURE_IMAGE_BYTES)
        outputs = signature.structured_outputs[contract.OUTPUT_PROBABILITIES]
        names = ClassNames(self._settings.class_names)
        names.reset(outputs.shape[-1], list(exported.class_names()))
        return LoadedVersion(exported.version, signature, names, exported.metadata(), stamp)

    def _run(
        self, images: list[bytes], loaded: LoadedVersion | None = None, timed: bool = True
    ) -> list[Answer]:
        loaded = loaded or self._loaded  # read once: a swap waits for the next batch
        start = time.perf_counter()
        outputs = loaded.signature(**{contract.INPUT_IMAGE_BYTES: self._tf.constant(images)})
        if timed and self._on_latency is not None:
            self._on_latency(time.perf_counter() - start)
        probabilities = np.asarray(outputs[contract.OUTPUT_PROBABILITIES])
        return [Answer(row, loaded.version, loaded.names) for row in probabilities]

    def _load_and_warm_up(self, folder: pathlib.Path) -> LoadedVersion:
        loaded = self._load(folder)
        # TensorFlow's first run of a function is slow (thread pools, kernels): not on a client,
        # and not in the model-call latency metric.
        self._run(probe_images()[:1], loaded, timed=False)
        return loaded

    async def start(self) -> None:
        start = time.perf_counter()
        await asyncio.to_thread(self._run, probe_images()[:1], None, False)  # warm-up
        loaded = self._loaded
        self._event(
            "loaded",
            version=loaded.version,
            previous_version=None,
            classes=loaded.names.count,
            load_s=round(self._load_s + time.perf_counter() - start, 3),
            problem=loaded.names.problem,
        )
        self._batcher.start()
        if self._settings.model_poll_s > 0 and self._settings.model_version is None:
            self._poller = asyncio.create_task(self._poll(self._settings.model_poll_s))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._batcher.stop()

    async def _poll(self, seconds: float) -> None:
        failing = ""  # the last poll's error, logged once until polls succeed again
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload()
                failing = ""
            except Exception as err:  # an unreadable folder, say: keep serving, keep polling
                if _one_line(err) != failing:
                    failing = _one_line(err)
                    self._event("poll_failed", version=self.version, error=failing)

    async def reload(self) -> bool:
        """Serves the highest version in the model folder if it is not the one served (a
        newer one, or an older one when the newest was removed); True when it swapped."""
        async with self._reloading:  # one load at a time, whoever asks
            return await self._reload()

    async def _reload(self) -> bool:
        found = await asyncio.to_thread(self._newest)
        if found is None:
            if not self._missing_logged:
                self._missing_logged = True
                self._event("no_versions", version=self.version, path=str(self._model_dir))
            return False
        self._missing_logged = False
        newest, stamp = found
        if (newest, stamp) == (self.version, self._loaded.stamp) or stamp in self._refused:
            return False
        start = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self._load_and_warm_up, self._model_dir / str(newest))
        except Exception as err:  # a broken or foreign folder must not take the server down
            self._refused.add(stamp)
            self._event("load_failed", version=newest, serving=self.version, error=_one_line(err))
            return False
        previous, self._loaded = self.version, loaded
        load_s = time.perf_counter() - start
        # The old version's graph is held in reference cycles: without a collection it stays
        # in memory for a while (measured with d2l: RSS grew by 100-200 MB a swap, to 2.1 GB
        # after ten swaps, against a flat 1.2 GB with it), and it was frozen at start with the
        # rest of the process (`heap.py`): out of reach of any collection but this one.
        collected = time.perf_counter()
        await asyncio.to_thread(collect_all)
        self._event(
            "loaded",
            version=loaded.version,
            previous_version=previous,
            classes=loaded.names.count,
            load_s=round(load_s, 3),
            gc_s=round(time.perf_counter() - collected, 3),
            problem=loaded.names.problem,
        )
        return True

    def _newest(self) -> tuple[int, Stamp] | None:
        """The highest version in the model folder that has not failed to load as it is, and
        its stamp (None when there is no version)."""
        versions = version_numbers(self._model_dir)
        if not versions:
            return None
        for version in reversed(versions):
            try:
                stamp = _stamp(self._model_dir / str(version))
            except OSError:  # removed meanwhile: no change until the next poll
                return self._loaded.version, self._loaded.stamp
            if stamp not in self._refused:
                return version, stamp
        return self._loaded.version, self._loaded.stamp  # every one on disk failed: keep it

    def _event(self, event: str, **fields: Any) -> None:
        self._events.event(event, **fields)

    async def ready(self) -> bool:
        return True

    async def predict(self, image: bytes, group: Hashable | None = None) -> Answer:
        try:
            answer: Answer = await self._batcher.submit(image, group)
        except QueueFull as err:
            raise UpstreamError(503, f"Overloaded: {err}; retry later.", retry_after=1) from None
        except DeadlineExceeded as err:
            raise UpstreamError(504, f"The model gave no answer in time: {err}.") from None
        except self._tf.errors.InvalidArgumentError as err:  # the decoder refused the image
            raise UpstreamError(400, _one_line(err)) from None
        return answer

    def metadata(self) -> dict[str, Any]:
        loaded = self._loaded
        return {
            "name": self.name,
            "version": loaded.version,
            "class_names": loaded.names.as_list(),
            "input_shape": loaded.metadata.get("input_shape"),
            "signatures": loaded.metadata.get("signatures"),
            "bf16_rewrite": {"enabled": self.bf16.available, "reason": self.bf16.reason},
            "cpu_memory_pool": self.memory_pool,
            "training_metrics": loaded.metadata.get("training_metrics", {}),
        }


def decoded_pixels(image: bytes) -> int:
    """The pixels an image decodes to, from its header (checked on arrival: `check_image`;
    the batcher counts an image it cannot read as costing nothing)."""
    _, width, height = image_size(image)
    return width * height


def _stamp(folder: pathlib.Path) -> Stamp:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return tuple(
        (str(path.relative_to(folder)), found.st_ino, found.st_size, found.st_mtime_ns)
        for path, found in ((path, path.stat()) for path in files)
    )


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
