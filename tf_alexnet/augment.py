"""Training-only augmentation, per image and stateless: the same seed gives the same image.

Every op takes a float image in [0, 1] and a `[2]` int seed; `augment` splits the seed
so each part draws independent randomness. Keras's preprocessing layers are avoided on
purpose (RandomCrop is a no-op at inference and crops a whole batch at one offset).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_alexnet.preprocess import resize

CROP_MODES = ("none", "pad", "resize")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which augmentations run on training images, each one switchable.

    Attributes:
        flip: random horizontal flip.
        crop: `"none"`; `"pad"` (zero-pad to `size / crop_fraction`, then crop back to
            `size`: for small inputs); `"resize"` (upscale to `size / crop_fraction`, then
            crop: the paper's 224-of-256 crops).
        crop_fraction: side of the crop relative to the enlarged canvas, in (0, 1].
        brightness: maximum brightness delta (pixels are in [0, 1]).
        contrast: contrast factor drawn from `[1 - contrast, 1 + contrast]`.
        saturation: saturation factor drawn from `[1 - saturation, 1 + saturation]` (RGB only).
        hue: maximum hue delta, in [0, 0.5] (RGB only).
        pca_lighting: standard deviation of the paper's PCA colour noise (RGB only; the paper
            uses 0.1).
    """

    flip: bool = False
    crop: str = "none"
    crop_fraction: float = 0.875
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    pca_lighting: float = 0.0

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise ValueError(f"`crop` should be one of {CROP_MODES}. Received: crop={self.crop!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(
                f"`crop_fraction` should be in (0, 1]. Received: crop_fraction={self.crop_fraction}"
            )
        for name in ("brightness", "contrast", "saturation", "pca_lighting"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` should be >= 0. Received: {name}={getattr(self, name)}")
        if self.contrast >= 1 or self.saturation >= 1:
            raise ValueError(
                "`contrast` and `saturation` should be < 1. "
                f"Received: contrast={self.contrast}, saturation={self.saturation}"
            )
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"`hue` should be in [0, 0.5]. Received: hue={self.hue}")

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


def augment(
    image: tf.Tensor,
    size: tuple[int, int],
    seed: tf.Tensor,
    spec: Augmentation,
    pca: tuple[np.ndarray, np.ndarray] | None = None,
) -> tf.Tensor:
    """Augments one float `[h, w, c]` image in [0, 1] (any source size) to `size`.

    Args:
        image: the source image, already converted to the model's channels.
        size: the model's `(height, width)`.
        seed: a `[2]` integer tensor; the same seed gives the same output.
        spec: the augmentations to apply.
        pca: `(eigenvalues [3], eigenvectors [3, 3])` of the RGB covariance, for
            `spec.pca_lighting` (see `rgb_pca`).
    """
    crop_seed, flip_seed, bright_seed, contrast_seed, sat_seed, hue_seed, pca_seed = tf.unstack(
        tf.random.split(tf.cast(seed, tf.int64), 7)
    )
    channels = image.shape[-1]
    canvas = (round(size[0] / spec.crop_fraction), round(size[1] / spec.crop_fraction))
    if spec.crop == "resize":
        image = resize(image, canvas)
    else:
        image = resize(image, size)
        if spec.crop == "pad":
            image = tf.image.resize_with_crop_or_pad(image, canvas[0], canvas[1])
    if spec.crop != "none":
        image = tf.image.stateless_random_crop(image, (*size, channels), seed=crop_seed)
    if spec.flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    if spec.brightness:
        image = tf.image.stateless_random_brightness(image, spec.brightness, seed=bright_seed)
    if spec.contrast:
        image = tf.image.stateless_random_contrast(
            image, 1 - spec.contrast, 1 + spec.contrast, seed=contrast_seed
        )
    if spec.saturation:
        image = tf.image.stateless_random_saturation(
            image, 1 - spec.saturation, 1 + spec.saturation, seed=sat_seed
        )
    if spec.hue:
        image = tf.image.stateless_random_hue(image, spec.hue, seed=hue_seed)
    if spec.pca_lighting:
        if pca is None:
            raise ValueError("`pca_lighting` needs the RGB eigen-decomposition (`pca=`).")
        image = pca_lighting(image, pca_seed, spec.pca_lighting, *pca)
    return tf.clip_by_value(image, 0.0, 1.0)


def pca_lighting(
    image: tf.Tensor,
    seed: tf.Tensor,
    stddev: float,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
) -> tf.Tensor:
    """The paper's colour noise: adds `eigenvectors @ (alpha * eigenvalues)`, alpha ~ N(0, sd)."""
    alpha = tf.random.stateless_normal([3], seed=seed, stddev=stddev)
    shift = tf.linalg.matvec(tf.constant(eigenvectors, tf.float32), alpha * eigenvalues)
    return image + shift


def rgb_pca(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance of `pixels`.

    Args:
        pixels: `[..., 3]` array of values in [0, 1].
    """
    flat = np.asarray(pixels, np.float64).reshape(-1, 3)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(flat, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    return eigenvalues[order].astype(np.float32), eigenvectors[:, order].astype(np.float32)
