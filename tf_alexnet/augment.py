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

__all__ = ["CROP_MODES", "Augmentation", "augment", "pca_lighting", "random_erase", "rgb_pca"]

ERASE_AREA = (0.02, 0.4)  # the erased rectangle's share of the image (Zhong et al., 2017)
ERASE_ASPECT = (0.3, 1 / 0.3)  # its height / width, drawn log-uniformly


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
    image = tf.clip_by_value(image, 0.0, 1.0)
    if spec.erase:
        # Its own seed, folded in, so the other augmentations draw what they drew without it.
        erase_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 7)
        image = random_erase(image, erase_seed, spec.erase)
    return image


def random_erase(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """With `probability`, fills one random rectangle of `image` with uniform noise in [0, 1].

    The rectangle covers `ERASE_AREA` of the image with a height / width ratio in
    `ERASE_ASPECT` (clipped to the image), all channels at once.
    """
    coin_seed, area_seed, aspect_seed, y_seed, x_seed, noise_seed = tf.unstack(
        tf.random.split(seed, 6)
    )
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    area = height * width * tf.random.stateless_uniform([], area_seed, *ERASE_AREA)
    log_aspect = tf.random.stateless_uniform(
        [], aspect_seed, float(np.log(ERASE_ASPECT[0])), float(np.log(ERASE_ASPECT[1]))
    )
    aspect = tf.exp(log_aspect)
    box_h = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(area * aspect)), 1, height), tf.int32)
    box_w = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(area / aspect)), 1, width), tf.int32)
    top = tf.random.stateless_uniform([], y_seed, 0, shape[0] - box_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], x_seed, 0, shape[1] - box_w + 1, dtype=tf.int32)
    rows = tf.range(shape[0])[:, None, None]
    cols = tf.range(shape[1])[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    erase = tf.random.stateless_uniform([], coin_seed) < probability
    noise = tf.random.stateless_uniform(shape, noise_seed, dtype=image.dtype)
    return tf.where(inside & erase, noise, image)


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
