"""Image preprocessing shared by training, evaluation and export: decode, channels, resize, scale.

Every path that feeds a model goes through `preprocess`, so a served image is resized
exactly as the training images were.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

RESIZE_METHOD = "bilinear"


def decode(encoded: Any, channels: int) -> tf.Tensor:
    """Decodes a JPEG, PNG, GIF (first frame), BMP or WebP string to uint8 `[h, w, channels]`.

    Always asked for 3 channels. TensorFlow 2.21 then refuses a WebP with transparency or
    animation cleanly; asked for the file's own channels instead, it corrupts the heap on an
    animated WebP and the process aborts (tests/tf_alexnet/test_data.py).
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return to_channels(image, channels)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts a `[h, w, 1|3]` image to `channels` (1: luma, 3: gray replicated)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"Cannot convert a {have}-channel image to {channels} channels.")


def preprocess(image: tf.Tensor, size: tuple[int, int], channels: int) -> tf.Tensor:
    """uint8 `[h, w, c]` (or a batch of them) -> float32 `[size..., channels]` in [0, 1]."""
    image = tf.image.convert_image_dtype(to_channels(image, channels), tf.float32)
    return resize(image, size)


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Float image(s) -> `size`, bilinear (antialiased when shrinking), clipped to [0, 1]."""
    if tuple(image.shape[-3:-1]) == tuple(size):
        return image
    resized = tf.image.resize(image, size, method=RESIZE_METHOD, antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)
