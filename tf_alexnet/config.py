"""Training configuration: one frozen dataclass, presets, TOML/JSON files and overrides.

Resolution order: preset < config file < command-line flags. The resolved configuration
is written into the run directory (`config.json`), so every run can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from typing import Any

from tf_alexnet import contract
from tf_alexnet.augment import Augmentation
from tf_alexnet.data import DataSpec, PipelineSpec
from tf_alexnet.errors import UserError
from tf_alexnet.model import min_input_size

SCHEDULES = ("constant", "cosine", "step", "plateau")
STRATEGIES = ("auto", "default", "one-device", "mirrored", "multiworker")
MIXED_PRECISION = ("off", "bf16", "fp16", "auto")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults reproduce the d2l chapter."""

    # Data
    dataset: str = contract.DATASET
    data_dir: str | None = None
    manual_dir: str | None = None
    image_folder: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    train_examples: int | None = None
    # Model
    variant: str = "d2l"
    image_size: int = contract.IMAGE_SIZE
    channels: int = contract.CHANNELS
    dropout: float = 0.5
    # Optimization (SGD)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_epochs: int = 30
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # Input pipeline
    augment: Augmentation = dataclasses.field(default_factory=Augmentation)
    shuffle_buffer: int = 10_000
    cache: bool = True
    deterministic: bool = False
    # Execution
    strategy: str = "auto"
    cpu_devices: int = 0
    # multiworker: seconds a collective operation may wait for the other workers (0: forever)
    collective_timeout: float = 300.0
    mixed_precision: str = "off"
    jit_compile: bool = False
    steps_per_execution: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        _check_choice("variant", self.variant, contract.VARIANTS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        for name in ("epochs", "batch_size", "image_size", "step_epochs", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise UserError(f"`{name}` should be >= 1. Received: {name}={getattr(self, name)}")
        if self.channels not in (1, 3):
            raise UserError(f"`channels` should be 1 or 3. Received: channels={self.channels}")
        if self.learning_rate <= 0:
            raise UserError(f"`learning_rate` should be > 0. Received: {self.learning_rate}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise UserError(
                "`momentum` should be in [0, 1) and `weight_decay` >= 0. "
                f"Received: momentum={self.momentum}, weight_decay={self.weight_decay}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise UserError(
                f"`label_smoothing` should be in [0, 1). Received: {self.label_smoothing}"
            )
        if self.warmup_epochs < 0:
            raise UserError(f"`warmup_epochs` should be >= 0. Received: {self.warmup_epochs}")
        if self.warmup_epochs and self.schedule == "plateau":
            raise UserError(
                "`warmup_epochs` does not combine with schedule='plateau' (it changes the "
                "rate itself). Received: warmup_epochs=" + str(self.warmup_epochs)
            )
        if self.collective_timeout < 0:
            raise UserError(
                f"`collective_timeout` should be >= 0. Received: {self.collective_timeout}"
            )
        if self.cpu_devices < 0:
            raise UserError(f"`cpu_devices` should be >= 0. Received: {self.cpu_devices}")
        smallest = min_input_size(self.variant)
        if self.image_size < smallest:
            raise UserError(
                f"Input size must be at least {smallest}x{smallest} for variant={self.variant!r}. "
                f"Received: image_size={self.image_size}"
            )
        try:
            self.augment.check_channels(self.channels)
        except ValueError as err:
            raise UserError(str(err)) from None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def data_spec(self) -> DataSpec:
        return DataSpec(
            dataset=self.dataset,
            data_dir=self.data_dir,
            manual_dir=self.manual_dir,
            image_folder=self.image_folder,
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
            train_examples=self.train_examples,
            seed=self.seed,
        )

    def pipeline_spec(self, global_batch_size: int, one_hot: bool = True) -> PipelineSpec:
        return PipelineSpec(
            image_size=(self.image_size, self.image_size),
            channels=self.channels,
            batch_size=global_batch_size,
            augmentation=self.augment,
            shuffle_buffer=self.shuffle_buffer,
            cache=self.cache,
            deterministic=self.deterministic,
            one_hot=one_hot,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(
            f"`{name}` should be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}"
        )


PRESETS: dict[str, dict[str, Any]] = {
    # The d2l chapter exactly: 224 px, plain SGD lr 0.01, batch 128, no augmentation.
    "chapter": {},
    # Minutes on a laptop CPU: the mini variant at 28 px, two epochs.
    "quick": {
        "variant": "mini",
        "image_size": 28,
        "epochs": 2,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "schedule": "cosine",
        "augment": {"flip": True, "crop": "pad"},
    },
    # The mini variant's full CPU recipe (benchmarks/accuracy.py): large batches and many
    # steps per execution keep a 2-core CPU busy (about 700 img/s); Nesterov SGD with a
    # one-epoch warm-up and cosine decay; light regularization for a 10-epoch budget.
    "cpu": {
        "variant": "mini",
        "image_size": 28,
        "epochs": 10,
        "batch_size": 256,
        "steps_per_execution": 32,
        "learning_rate": 0.2,
        "momentum": 0.9,
        "nesterov": True,
        "warmup_epochs": 1,
        "weight_decay": 0.0005,
        "schedule": "cosine",
        "label_smoothing": 0.1,
        "dropout": 0.3,
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


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Builds a config, refusing unknown keys with a clear message."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"Unknown configuration keys: {', '.join(unknown)}.")
    values = dict(values)
    augment = values.get("augment", {})
    if isinstance(augment, dict):
        aug_known = {f.name for f in dataclasses.fields(Augmentation)}
        bad = sorted(set(augment) - aug_known)
        if bad:
            raise UserError(f"Unknown augmentation keys: {', '.join(bad)}.")
        try:
            values["augment"] = Augmentation(**augment)
        except ValueError as err:
            raise UserError(str(err)) from err
    try:
        return TrainConfig(**values)
    except TypeError as err:
        raise UserError(f"Invalid configuration: {err}") from err


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `overrides`, one level deep for the `augment` table."""
    merged = {**base, **overrides}
    if isinstance(base.get("augment"), dict) and isinstance(overrides.get("augment"), dict):
        merged["augment"] = {**base["augment"], **overrides["augment"]}
    return merged


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a `.toml` or `.json` configuration file (a run's `config.json` works too)."""
    path = os.fspath(path)
    if not path.endswith((".toml", ".json")):
        raise UserError(f"Configuration files are .toml or .json. Received: {path!r}")
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file) if path.endswith(".toml") else json.load(file)
    except FileNotFoundError as err:
        raise UserError(f"No configuration file at {path!r}.") from err
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"Could not parse {path!r}: {err}") from err
    if not isinstance(values, dict):
        raise UserError(f"{path!r} should hold a table of settings.")
    return values


def resolve(
    preset: str = "chapter",
    file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """preset < file < overrides."""
    if preset not in PRESETS:
        raise UserError(
            f"`preset` should be one of {', '.join(map(repr, PRESETS))}. Received: {preset!r}"
        )
    values = PRESETS[preset]
    if file is not None:
        values = merge(values, read_file(file))
    return from_dict(merge(values, overrides or {}))
