"""The variants' layer tables (d2l, paper, mini) and their geometry: the smallest input each takes.

What each variant is, and where it differs from the paper: `tf_alexnet.model`'s docstring.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from tf_alexnet import contract


@dataclasses.dataclass(frozen=True)
class Conv:
    """A ReLU convolution (conv -> batch norm -> ReLU in a batch-norm variant)."""

    name: str
    filters: int
    kernel: int
    strides: int = 1
    padding: str = "same"
    groups: int = 1
    bias: float = 0.0


@dataclasses.dataclass(frozen=True)
class Pool:
    """An overlapping max pooling (`POOL_SIZE`, `POOL_STRIDE`)."""

    name: str
    padding: str = "valid"


@dataclasses.dataclass(frozen=True)
class Norm:
    """The paper's local response normalization."""

    name: str


def glorot_uniform() -> Any:
    """The chapter's Xavier initialization (Glorot uniform), a new initializer per layer."""
    import keras  # here, not at the top: the tables and their geometry need no TensorFlow

    return keras.initializers.GlorotUniform()


def paper_normal() -> Any:
    """The paper's initialization: N(0, 0.01), a new initializer per layer."""
    import keras

    return keras.initializers.RandomNormal(stddev=0.01)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant: its feature layers in order, then its fc6/fc7 width and initialization."""

    features: tuple[Conv | Pool | Norm, ...]
    hidden_units: int
    hidden_bias: float
    kernel_initializer: Callable[[], Any]
    batch_norm: bool = False

    def scaled(self, width: float) -> Variant:
        """This variant with every conv's filters and the fc6/fc7 units multiplied by `width`.

        Counts are rounded to a multiple of `WIDTH_MULTIPLE`, so `width=1.0` gives the declared
        layers exactly and grouped convs keep whole groups.
        """
        features = tuple(
            dataclasses.replace(f, filters=_scaled_count(f.filters, width))
            if isinstance(f, Conv)
            else f
            for f in self.features
        )
        return dataclasses.replace(
            self, features=features, hidden_units=_scaled_count(self.hidden_units, width)
        )


VARIANTS: dict[str, Variant] = {
    "d2l": Variant(
        features=(
            Conv("conv1", 96, 11, strides=4, padding="valid"),
            Pool("pool1"),
            Conv("conv2", 256, 5),
            Pool("pool2"),
            Conv("conv3", 384, 3),
            Conv("conv4", 384, 3),
            Conv("conv5", 256, 3),
            Pool("pool5"),
        ),
        hidden_units=4096,
        hidden_bias=0.0,
        kernel_initializer=glorot_uniform,
    ),
    "paper": Variant(
        features=(
            Conv("conv1", 96, 11, strides=4, padding="valid"),
            Norm("norm1"),
            Pool("pool1"),
            Conv("conv2", 256, 5, groups=2, bias=1.0),
            Norm("norm2"),
            Pool("pool2"),
            Conv("conv3", 384, 3),
            Conv("conv4", 384, 3, groups=2, bias=1.0),
            Conv("conv5", 256, 3, groups=2, bias=1.0),
            Pool("pool5"),
        ),
        hidden_units=4096,
        hidden_bias=1.0,
        kernel_initializer=paper_normal,
    ),
    "mini": Variant(
        features=(
            Conv("conv1", 32, 3),
            Pool("pool1", padding="same"),
            Conv("conv2", 64, 3),
            Pool("pool2", padding="same"),
            Conv("conv3", 96, 3),
            Conv("conv4", 96, 3),
            Conv("conv5", 64, 3),
            Pool("pool5", padding="same"),
        ),
        hidden_units=512,
        hidden_bias=0.0,
        kernel_initializer=glorot_uniform,
        batch_norm=True,
    ),
}
assert tuple(VARIANTS) == contract.VARIANTS

POOL_SIZE, POOL_STRIDE = 3, 2
WIDTH_MULTIPLE = 8
"""Scaled layer widths are multiples of this (and of every conv's `groups`, which divide it)."""


def _scaled_count(count: int, width: float) -> int:
    return max(WIDTH_MULTIPLE, round(count * width / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def check_width(width: Any) -> float:
    """`width` as a float; a ValueError unless it is a real number (Python's or NumPy's, not a
    bool) in (0, `contract.MAX_WIDTH`]."""
    if (
        isinstance(width, bool | np.bool_)
        or not isinstance(width, numbers.Real)
        or not (math.isfinite(width) and float(width) > 0)
    ):
        raise ValueError(f"`width` should be a positive number. Received: width={width!r}")
    if float(width) > contract.MAX_WIDTH:
        percent = (
            f" (a multiplier: {float(width) / 100:g} for {float(width):g}%)"
            if 10 <= float(width) <= 100 * contract.MAX_WIDTH
            else ""
        )
        raise ValueError(
            f"`width` should be at most {contract.MAX_WIDTH:g}{percent}: it multiplies the "
            "variant's layer widths, 1.0 being the variant as declared, and parameters grow "
            f"with its square (d2l has 747 million at width 4). Received: width={width!r}"
        )
    return float(width)


def _output_length(length: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(length / stride)
    return (length - kernel) // stride + 1 if length >= kernel else 0


def _feature_size(variant: Variant, size: int) -> int:
    """Spatial side of the last pooling output for a square-ish side `size` (0 = too small)."""
    for spec in variant.features:
        if isinstance(spec, Conv):
            size = _output_length(size, spec.kernel, spec.strides, spec.padding)
        elif isinstance(spec, Pool):
            size = _output_length(size, POOL_SIZE, POOL_STRIDE, spec.padding)
        if size < 1:
            return 0
    return size


def min_input_size(variant: str) -> int:
    """Smallest input height/width the variant accepts."""
    spec = get_variant(variant)
    return next(n for n in range(1, 1024) if _feature_size(spec, n) >= 1)


def get_variant(variant: str) -> Variant:
    """The declaration of `variant`; a ValueError lists the variants."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(
            f"`variant` should be one of {', '.join(map(repr, contract.VARIANTS))}. "
            f"Received: variant={variant!r}"
        )
    return VARIANTS[variant]


def reference_input(variant: str) -> tuple[tuple[int, int, int], int]:
    """The input shape and classes `variant` is described at (its parameter counts are at these).

    `paper`: the 2012 network's 227x227x3 ImageNet crops and 1000 classes; the others: the
    chapter's Fashion-MNIST resized to 224x224x1, 10 classes.
    """
    if variant == "paper":
        return (227, 227, 3), 1000
    return contract.INPUT_SHAPE, contract.NUM_CLASSES


def check_input_size(variant: str, size: int, received: str) -> None:
    """Raises ValueError when `size` (the smaller input side) is too small for `variant`.

    `received` ends the message, e.g. `"image_size=8"`.
    """
    smallest = min_input_size(variant)
    if size < smallest:
        raise ValueError(
            f"Input size must be at least {smallest}x{smallest} for variant={variant!r}. "
            f"Received: {received}"
        )
