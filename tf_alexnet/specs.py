"""Settings declared once, with types and ranges: what to read (`DataSpec`) and how to augment.

Pure Python and pydantic (no TensorFlow import), so the command line can build its flags and
its `--help` from these declarations cheaply. `tf_alexnet.config.TrainConfig` extends
`DataSpec` with the model, optimization and execution settings.

Every field is type-checked strictly (`"no"` is not a boolean, `"x"` not an integer) and
range-checked; a mistake raises `UserError` (a `ValueError`) with one line that names the key,
says what was expected, and ends with `Received: key=value`.
"""

from __future__ import annotations

import difflib
import os
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tf_alexnet import contract
from tf_alexnet.errors import UserError

CROP_MODES = ("none", "pad", "resize")


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


Path = Annotated[str, BeforeValidator(_fspath)]
"""A path: a string, or any `os.PathLike` (stored as a string)."""


class SpecError(UserError):
    """A settings mistake, as one line; `\\0` marks where the key's parent prefix goes."""

    def __init__(self, template: str) -> None:
        super().__init__(template.replace("\0", ""))
        self.template = template

    def nested(self, prefix: str) -> SpecError:
        """The same mistake one level down, e.g. `flip` -> `augment.flip`."""
        return SpecError(self.template.replace("\0", "\0" + prefix + "."))


class Spec(BaseModel):
    """A frozen, strictly typed settings record whose mistakes read as one line."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
    _what: ClassVar[str] = "configuration"  # the word for its keys in "Unknown ... keys"

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as err:
            raise describe_error(err, type(self)) from None


class Augmentation(Spec):
    """Which augmentations run on training images, each one switchable.

    `crop`: `"none"`; `"pad"` (zero-pad to `size / crop_fraction`, then crop back to `size`:
    for small inputs); `"resize"` (upscale to `size / crop_fraction`, then crop: the paper's
    224-of-256 crops). `erase` runs last, on the augmented image.
    """

    _what: ClassVar[str] = "augmentation"

    flip: bool = Field(False, description="random horizontal flips")
    crop: Literal["none", "pad", "resize"] = Field("none", description="random crops")
    crop_fraction: float = Field(
        0.875, gt=0, le=1, description="crop side / enlarged side, in (0, 1]"
    )
    brightness: float = Field(0.0, ge=0, description="max brightness delta (pixels in [0, 1])")
    contrast: float = Field(0.0, ge=0, lt=1, description="contrast factor range 1 +/- x")
    saturation: float = Field(0.0, ge=0, lt=1, description="saturation range 1 +/- x (RGB)")
    hue: float = Field(0.0, ge=0, le=0.5, description="max hue delta (RGB)")
    pca_lighting: float = Field(
        0.0, ge=0, description="stddev of the paper's PCA colour noise (RGB; the paper: 0.1)"
    )
    erase: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability of replacing a random rectangle (0.02-0.4 of the image's area) "
        "with noise: random erasing (Zhong et al., 2017)",
    )

    @property
    def enabled(self) -> bool:
        return self != Augmentation(crop_fraction=self.crop_fraction)

    def check_channels(self, channels: int) -> None:
        """Raises ValueError when a colour augmentation is asked of grayscale images."""
        if channels == 3:
            return
        rgb_only = [n for n in ("saturation", "hue", "pca_lighting") if getattr(self, n) > 0]
        if rgb_only:
            raise ValueError(
                f"{', '.join(rgb_only)} augmentation needs RGB images (channels=3). "
                f"Received: channels={channels}"
            )


class DataSpec(Spec):
    """What to read and how to split it."""

    dataset: str = Field(
        contract.DATASET,
        description="TFDS image-classification dataset (ignored with image_folder)",
    )
    data_dir: Path | None = Field(
        None, description=f"TFDS data folder (default ${contract.ENV_DATA_DIR}, else TFDS's)"
    )
    manual_dir: Path | None = Field(
        None,
        description="folder with the dataset's original files, for offline builds "
        f"(default ${contract.ENV_MANUAL_DIR})",
    )
    image_folder: Path | None = Field(
        None, description="a folder with one subfolder of images per class (or train/, test/)"
    )
    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of the training data held out for validation (0: none)"
    )
    test_fraction: float = Field(
        0.1, ge=0, lt=1, description="test share when the source has no test split"
    )
    stratify: bool = Field(
        True,
        description="image folders: draw the validation and test splits class by class, so each "
        "holds every class in proportion (and one image of a class of 3 or more); false: at "
        "random over all images. TFDS datasets are split at random",
    )
    train_examples: int | None = Field(
        None, ge=1, description="keep only this many training images (quick runs)"
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,  # numpy's seeds stop there
        description="seed for splits, shuffling, augmentation and weights",
    )

    @field_validator("image_folder")
    @classmethod
    def _folder_named(cls, value: str | None) -> str | None:
        # An empty path is falsy: it read as "no image folder" and trained on the TFDS dataset.
        if value == "":
            raise ValueError(
                "`image_folder` should be a folder with one subfolder of images per class, not an "
                "empty string (null, the default, reads `dataset`). Received: image_folder=''"
            )
        return value


# --- One-line messages --------------------------------------------------------------------


def _close_keys(unknown: list[str], spec: type[Spec]) -> str:
    """ ", did you mean learning_rate?" for unknown keys that look like known ones' misspellings
    (the known list is long: 36 settings), or that are a section's setting given outside it
    (`flip` -> `augment.flip`), else ""."""
    known = list(spec.model_fields)
    sections = {
        setting: f"{name}.{setting}"
        for name, field in spec.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Spec)
        for setting in field.annotation.model_fields
    }
    close = []
    for key in unknown:
        match = sections.get(key) or next(
            iter(difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1, cutoff=0.75)), None
        )
        if match:
            close.append(match)
    return f", did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""


def describe_error(err: pydantic.ValidationError, spec: type[Spec]) -> SpecError:
    """The first mistake of `err` as one Keras-style line (and how many more there are)."""
    errors = err.errors(include_url=False)
    first = errors[0]
    key = "\0" + ".".join(str(part) for part in first["loc"])
    received = f"Received: {key}={first.get('input')!r}"
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, SpecError):  # a nested spec's own mistake (pydantic calls its init)
        return cause.nested(".".join(str(part) for part in first["loc"]))
    if first["type"] == "extra_forbidden":
        unknown = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "extra_forbidden"]
        known = ", ".join(spec.model_fields)
        hints = _close_keys(unknown, spec)
        message = (
            f"Unknown {spec._what} keys: {', '.join(unknown)}{hints} (known: {known}). {received}"
        )
        more = len(errors) - len(unknown)
    else:
        if first["type"] == "value_error":  # a check across fields: its message is complete
            message = str(cause)
        else:
            field = spec.model_fields.get(str(first["loc"][0]))
            message = f"`{key}` should be {_expected(first, field)}. {received}"
        more = len(errors) - 1
    return SpecError(message + (f" (and {more} more mistake{'s' * (more > 1)})" if more else ""))


_KINDS = {
    "bool_type": "a boolean (true or false)",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "model_type": "a table of settings",
    "dict_type": "a table of settings",
}


def _expected(error: Any, field: Any) -> str:
    """What the field takes: its type and, for numbers, its whole range."""
    kind = error["type"]
    if kind == "literal_error":
        return str(error["ctx"]["expected"])
    bounds = _bounds(field) if field is not None else ""
    base = _KINDS.get(kind)
    if base is None:  # a range error: the type was right
        return bounds or str(error["msg"]).removeprefix("Input should be ")
    if field is not None and field.default is None:
        base += " (or null, the default)"
    return base + (f" {bounds}" if bounds else "")


def _bounds(field: Any) -> str:
    limits: dict[str, Any] = {}
    for item in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(item, name, None) is not None:
                limits[name] = getattr(item, name)
    low = f"[{limits['ge']}" if "ge" in limits else f"({limits['gt']}" if "gt" in limits else ""
    high = f"{limits['le']}]" if "le" in limits else f"{limits['lt']})" if "lt" in limits else ""
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f"{'<=' if high[-1] == ']' else '<'} {high[:-1]}"
    return ""
