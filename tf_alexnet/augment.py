"""Training-only augmentation, per image and stateless: the same seed gives the same image.

Every op takes a float image in [0, 1] and a `[2]` int seed; `augment` splits the seed
so each part draws independent randomness. Keras's preprocessing layers are avoided on
purpose (RandomCrop is a no-op at inference and crops a whole batch at one offset).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_alexnet.preprocess import resize
from tf_alexnet.specs import CROP_MODES, Augmentation

__all__ = ["CROP_MODES", "Augmentation", "augment", "pca_lighting", "rgb_pca"]


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
