"""Training configuration: one frozen, typed record (`TrainConfig`), presets, files, overrides.

A preset is a training recipe (a starting set of values), not pretrained weights. Resolution
order: preset < config file < command-line flags. Every entry (presets, TOML and JSON files,
flags, a run's `config.json`) goes through the same declarations, so a wrong type or a value
out of range is refused the same way, in one line. The resolved configuration is written
into the run directory (`config.json`), so every run can be reproduced.

No TensorFlow import at module level: the command line derives its flags from `TrainConfig`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.specs import Augmentation, DataSpec

if TYPE_CHECKING:
    from tf_alexnet.pipeline import PipelineSpec

SCHEDULES = ("constant", "cosine", "step", "plateau")
STRATEGIES = ("auto", "default", "one-device", "mirrored", "multiworker")
MIXED_PRECISION = ("off", "bf16", "fp16", "auto")


DATA_PATHS = ("image_folder", "data_dir", "manual_dir")
"""The data settings that name folders."""


class TrainConfig(DataSpec):
    """Everything a training run depends on. Defaults reproduce the d2l chapter.

    The data settings are `DataSpec`'s fields (inherited); then the model, the optimization
    (SGD), the input pipeline and the execution.
    """

    # Model
    variant: Literal["d2l", "paper", "mini"] = Field("d2l", description="the AlexNet variant")
    width: float = Field(
        1.0,
        gt=0,
        le=contract.MAX_WIDTH,
        description="multiplier of the variant's layer widths (conv filters, fc6/fc7 units)",
    )
    image_size: int = Field(contract.IMAGE_SIZE, ge=1, description="model input height and width")
    channels: Literal[1, 3] = Field(1, description="1 (grayscale) or 3 (RGB)")  # contract.CHANNELS
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout after fc6 and fc7")
    test_time_flip: bool = Field(
        False,
        description="score each image and its mirror image at inference and average them "
        "(about twice the inference compute)",
    )
    # Optimization (SGD)
    epochs: int = Field(5, ge=1, description="number of epochs")
    batch_size: int = Field(128, ge=1, description="batch size per replica")
    learning_rate: float = Field(0.01, gt=0, description="initial (peak) learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="Nesterov momentum")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    schedule: Literal["constant", "cosine", "step", "plateau"] = Field(
        "constant", description="learning-rate schedule"
    )
    step_epochs: int = Field(
        30, ge=1, description="with schedule step: divide the learning rate by 10 every N epochs"
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="linear learning-rate warm-up from 0, then the schedule (the warm-up "
        "takes at most half the run)",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing")
    ema_momentum: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="keep a moving average of the weights with this momentum (0: off); "
        "validation, the checkpoints and the final model use the average",
    )
    # Input pipeline
    augment: Augmentation = Field(
        default_factory=Augmentation, description="training-image augmentation"
    )
    shuffle_buffer: int = Field(10_000, ge=1, description="shuffle buffer, in examples")
    cache: bool = Field(True, description="cache decoded examples in memory")
    deterministic: bool = Field(
        True,
        description="keep the training batches in the order the seed draws (false: parallel "
        "preparation may hand them over as they finish, so the same seed and a resumed run "
        "may train another model)",
    )
    # Execution
    strategy: Literal["auto", "default", "one-device", "mirrored", "multiworker"] = Field(
        "auto", description="tf.distribute strategy (multiworker reads TF_CONFIG)"
    )
    cpu_devices: int = Field(0, ge=0, description="split the CPU into N logical devices")
    collective_timeout: float = Field(
        300.0,
        ge=0,
        description="multiworker: seconds to wait for the other workers to join, and for each "
        "collective op (0: forever)",
    )
    mixed_precision: Literal["off", "bf16", "fp16", "auto"] = Field(
        "off", description="Keras mixed-precision policy"
    )
    jit_compile: bool = Field(False, description="XLA-compile the train step")
    steps_per_execution: int = Field(
        1,
        ge=1,
        description="batches per tf.function call (rounded so that each epoch is whole calls)",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.warmup_epochs and self.schedule == "plateau":
            raise ValueError(
                "`warmup_epochs` does not combine with schedule='plateau' (it changes the "
                f"rate itself). Received: warmup_epochs={self.warmup_epochs}"
            )
        if self.schedule == "plateau" and self.validation_fraction == 0:
            raise ValueError(
                "schedule='plateau' watches the validation loss: it needs a validation split. "
                f"Received: validation_fraction={self.validation_fraction}"
            )
        from tf_alexnet.variants import check_input_size  # the variants' geometry lives there

        check_input_size(self.variant, self.image_size, f"image_size={self.image_size}")
        self.augment.check_channels(self.channels)
        return self

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def data_spec(self) -> DataSpec:
        return DataSpec(**{name: getattr(self, name) for name in DataSpec.model_fields})

    def pipeline_spec(
        self, global_batch_size: int, one_hot: bool = True, replicas: int = 1
    ) -> PipelineSpec:
        from tf_alexnet.pipeline import PipelineSpec

        return PipelineSpec(
            replicas=replicas,
            image_size=(self.image_size, self.image_size),
            channels=self.channels,
            batch_size=global_batch_size,
            augmentation=self.augment,
            shuffle_buffer=self.shuffle_buffer,
            cache=self.cache,
            deterministic=self.deterministic,
            one_hot=one_hot,
            steps_per_execution=self.steps_per_execution,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def with_absolute_paths(self) -> TrainConfig:
        """These settings with their data folders (`DATA_PATHS`) made absolute, as a run's
        config.json records them: `evaluate` and `export` of the run work from any directory."""
        changes = {
            key: os.path.abspath(value)
            for key in DATA_PATHS
            if (value := getattr(self, key)) and not os.path.isabs(value)
        }
        return self.replace(**changes) if changes else self

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict(merge(self.to_dict(), changes))


AUTO_PRESET = "auto"
"""Not a recipe: picks `chapter` when TensorFlow sees a GPU, `cpu` otherwise."""

PRESETS: dict[str, dict[str, Any]] = {
    # The d2l chapter exactly (`lr, num_epochs, batch_size = 0.01, 5, 128`): the d2l network at
    # 224 px, Xavier (Glorot) init, plain SGD, 5 epochs, no augmentation.
    "chapter": {},
    # The chapter's network in the chapter's 5 epochs with a better recipe, chosen on the
    # validation split (docs/benchmarks/tune_d2l_224*.md): the `gpu` recipe with flips only,
    # batch 64, learning rate 0.03, dropout 0.3 and a half-epoch warm-up. One seed reached 0.9253
    # test accuracy against the chapter's 0.8469
    # (docs/benchmarks/accuracy_d2l_224_5_epochs_batch64.md).
    "chapter-improved": {
        "batch_size": 64,
        "learning_rate": 0.03,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "nesterov": True,
        "warmup_epochs": 0.5,
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "dropout": 0.3,
        "mixed_precision": "auto",
        "augment": {"flip": True},
    },
    # Minutes on a laptop CPU: the mini variant at 28 px, two epochs.
    "quick": {
        "variant": "mini",
        "image_size": 28,
        "epochs": 2,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "schedule": "cosine",
        "mixed_precision": "auto",
        "augment": {"flip": True, "crop": "pad"},
    },
    # The mini variant's full CPU recipe (benchmarks/accuracy.py), tuned on a held-out 10% of
    # the training split (docs/benchmarks/tune_cpu*.md), then fitted on all of it: the recipe's
    # epochs are fixed and its best epoch was the last or nearly so, so no validation split is
    # needed to pick the model. Many steps per execution keep a 2-core CPU busy; Nesterov SGD
    # with a one-epoch warm-up and cosine decay; light regularization for a 15-epoch budget.
    # A wider network (width 1.25) trained 1.2x slower for no test gain (accuracy_cpu_width.md).
    # Test-time flips (tune_cpu_12.md): +0.0030 validation accuracy on the same models (mean of
    # 3 seeds, paired: +0.0005 to +0.0046), for twice the inference compute of a 28 px network.
    "cpu": {
        "validation_fraction": 0,
        "variant": "mini",
        "image_size": 28,
        "epochs": 15,
        "batch_size": 128,
        "steps_per_execution": 32,
        "learning_rate": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "warmup_epochs": 1,
        "weight_decay": 0.0005,
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "dropout": 0.3,
        "test_time_flip": True,
        "mixed_precision": "auto",
        "augment": {"flip": True},
    },
    # The chapter's network with a modern recipe, for GPUs.
    "gpu": {
        "epochs": 30,
        "learning_rate": 0.02,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "nesterov": True,
        "warmup_epochs": 1,
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "mixed_precision": "auto",
        "augment": {"flip": True, "crop": "resize", "brightness": 0.1, "contrast": 0.2},
    },
}


def from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Builds a config; wrong keys, types and ranges get one line naming the key."""
    if not isinstance(values, Mapping):
        raise UserError(f"Settings should be a table. Received: {values!r}")
    return TrainConfig(**values)


IMAGE_FOLDER_ONLY = ("stratify",)
"""The settings that change nothing without an image folder (a TFDS dataset)."""

FOLDER_RUNS_RECORDED_BEFORE = {"stratify": False}
"""What an image-folder run recorded before a setting existed did, where that is not the
setting's default: image folders were split at random over all images before `stratify`."""


def _as_recorded(values: Mapping[str, Any]) -> dict[str, Any]:
    """A run's recorded settings with those added since as the run had them: their defaults,
    unless the runs before them did otherwise (`FOLDER_RUNS_RECORDED_BEFORE`)."""
    if not isinstance(values, Mapping):
        raise UserError(f"Settings should be a table. Received: {values!r}")
    if values.get("image_folder"):
        return {**FOLDER_RUNS_RECORDED_BEFORE, **values}
    return dict(values)


def from_recorded(values: Mapping[str, Any]) -> TrainConfig:
    """A run's `config.json`, read as the run had it (`_as_recorded`), so that its splits
    stay its own."""
    return from_dict(_as_recorded(values))


def is_a_runs_record(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is the `config.json` a run recorded (its history or metrics beside it).

    Such a file holds every setting there was when the run started: one added since is read
    as the run had it (`from_recorded`), not from the preset, so that `--config RUN/config.json`
    reproduces the run (the `cpu` preset's test-time flips were added to older `cpu` runs).
    """
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.basename(path) == contract.RUN_CONFIG and any(
        os.path.isfile(os.path.join(folder, name))
        for name in (contract.RUN_HISTORY, contract.RUN_METRICS)
    )


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `overrides`, one level deep for the `augment` table."""
    merged = {**base, **overrides}
    if isinstance(base.get("augment"), dict) and isinstance(overrides.get("augment"), dict):
        merged["augment"] = {**base["augment"], **overrides["augment"]}
    return merged


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a `.toml` or `.json` configuration file (a run's `config.json` works too).

    The suffix is matched in any case (`x.TOML`); a UTF-8 byte order mark, which some editors
    write, is skipped for TOML as JSON skips it.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".toml", ".json"):
        raise UserError(f"Configuration files are .toml or .json. Received: {path!r}")
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError as err:
        raise UserError(f"No configuration file at {path!r}.") from err
    except IsADirectoryError as err:
        raise UserError(f"{path!r} is a folder, not a settings file.") from err
    except PermissionError as err:
        raise UserError(f"Cannot read the configuration file {path!r}: permission denied.") from err
    try:
        text = data.decode("utf-8-sig")  # the byte order mark some editors write, skipped
        values = (
            tomllib.loads(text) if suffix == ".toml" else json.loads(text, object_pairs_hook=_once)
        )
    except UnicodeDecodeError as err:
        raise UserError(f"Could not parse {path!r}: it is not UTF-8 text.") from err
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, _KeyTwice) as err:
        raise UserError(f"Could not parse {path!r}: {err}") from err
    if not isinstance(values, dict):
        raise UserError(f"{path!r} should hold a table of settings.")
    return values


class _KeyTwice(ValueError):
    """A JSON object that gives a key twice."""


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys, each given once: `{"epochs": 1, "epochs": 2}` trained 2 epochs
    without a word (JSON parsers keep the last; TOML refuses a key given twice)."""
    table: dict[str, Any] = {}
    for key, value in pairs:
        if key in table:
            raise _KeyTwice(f"the key {key!r} is given twice")
        table[key] = value
    return table


def auto_preset(has_gpu: bool | None = None) -> str:
    """The preset that suits this machine: `chapter` with a GPU, `cpu` without.

    `has_gpu` defaults to asking TensorFlow (which imports it, without initializing devices).
    """
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return "chapter" if has_gpu else "cpu"


def auto_preset_note(preset: str) -> str:
    """What `auto` picked (`preset`, from `auto_preset`) and why, for a person to read."""
    if preset == "chapter":
        return "Preset auto: a GPU is available, so `chapter` (the d2l network at 224 px)."
    return (
        "Preset auto: no GPU here, so `cpu` (the mini variant at 28 px, 15 epochs). The chapter's "
        "d2l network at 224 px takes 10-30 minutes an epoch on a 2-core CPU, 1-3 hours for its "
        "5: pass --preset chapter to run it anyway, or --preset quick for a 2-epoch trial."
    )


def resolve(
    preset: str = "chapter",
    file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """preset < file < overrides (`preset="auto"`: see `auto_preset`)."""
    if preset == AUTO_PRESET:
        preset = auto_preset()
    if preset not in PRESETS:
        choices = ", ".join(map(repr, [AUTO_PRESET, *PRESETS]))
        raise UserError(f"`preset` should be one of {choices}. Received: preset={preset!r}")
    values = PRESETS[preset]
    if file is not None and is_a_runs_record(file):
        values = _as_recorded(read_file(file))
    elif file is not None:
        values = merge(values, read_file(file))
    config = from_dict(merge(values, overrides or {}))
    check_flips(config)
    return config


def check_flips(config: TrainConfig) -> None:
    """Refuses test-time flips without the flip augmentation, in settings asked for (a run's
    recorded ones still load, so that a run trained so can be evaluated and exported).

    A model with test-time flips answers the same for an image and its mirror image: data whose
    mirror images are other classes (left and right arrows, letters) scores at chance between
    them, which `--no-flip` with the `cpu` preset (`auto`'s pick on a CPU) did."""
    if config.test_time_flip and not config.augment.flip:
        raise UserError(
            "`test_time_flip` averages each image's class scores with its mirror image's, so "
            "the model cannot tell them apart: it goes with the flip augmentation, which trains "
            "mirror images as the same class. For data whose mirror images are other classes, "
            "pass --no-test-time-flip with --no-flip (test_time_flip = false in a config file). "
            "Received: test_time_flip=True, augment.flip=False"
        )
