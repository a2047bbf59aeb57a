"""Image preprocessing shared by training, evaluation and export: decode, channels, resize, scale.

Every path that feeds a model goes through `preprocess`, so a served image is resized
exactly as the training images were.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

RESIZE_METHOD = "bilinear"

SOURCE_MARGIN = 2
"""Larger images are first shrunk to this many times the model's side (see `shrink`)."""


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
    """uint8 `[h, w, c]` (or a batch of them) -> float32 `[size..., channels]` in [0, 1].

    A large image is first shrunk to `SOURCE_MARGIN` times the model's side, as the pipelines
    shrink it before their cache, so that a served image is resized as an evaluated one.
    """
    image = shrink(image, SOURCE_MARGIN * max(size))
    image = tf.image.convert_image_dtype(to_channels(image, channels), tf.float32)
    return resize(image, size)


def encoded_batch(encoded_images: Any, input_shape: Any) -> tf.Tensor:
    """Encoded images as one batch of pixels for a model whose input is `input_shape`
    (`(height, width, channels)`, a model's `input_shape[1:]`): each decoded and
    `preprocess`ed."""
    height, width, channels = input_shape
    return tf.stack(
        [preprocess(decode(b, channels), (height, width), channels) for b in encoded_images]
    )


def shrink(image: tf.Tensor, limit: int) -> tf.Tensor:
    """Image(s) `[..., h, w, c]` whose shorter side exceeds `limit` shrunk to it (aspect kept,
    antialiased; integers rounded back to their type); smaller ones as they are.

    Two antialiased shrinks give what one gives within a few levels; what the pipelines cache
    stays small (a folder of 120 12-megapixel photos took 5.5 GB at full size).
    """
    static = image.shape[-3:-1]
    if static.is_fully_defined() and min(static) <= limit:
        return image
    sides = tf.shape(image)[-3:-1]
    scale = limit / tf.cast(tf.reduce_min(sides), tf.float64)

    def shrunk() -> tf.Tensor:
        size = tf.maximum(tf.cast(tf.round(tf.cast(sides, tf.float64) * scale), tf.int32), 1)
        smaller = tf.image.resize(image, size, method=RESIZE_METHOD, antialias=True)
        if image.dtype.is_integer:
            smaller = tf.clip_by_value(tf.round(smaller), image.dtype.min, image.dtype.max)
        return tf.cast(smaller, image.dtype)

    return tf.cond(scale < 1, shrunk, lambda: image)


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Float image(s) -> `size`, bilinear (antialiased when shrinking), clipped to [0, 1]."""
    if tuple(image.shape[-3:-1]) == tuple(size):
        return image
    resized = tf.image.resize(image, size, method=RESIZE_METHOD, antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)
