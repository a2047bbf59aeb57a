"""The tf.data pipelines: training (shuffle, seeded augmentation) and evaluation (in order).

Both cache examples at source resolution (large images first shrunk to twice the size the
model needs, see `shrink_large`), then resize (and, for training only, augment) in a parallel
map, batch and prefetch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from tf_alexnet.augment import Augmentation, augment
from tf_alexnet.preprocess import SOURCE_MARGIN, preprocess, shrink, to_channels

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """How to feed a model: input size, batching, augmentation and tf.data options."""

    image_size: tuple[int, int]
    channels: int
    batch_size: int
    """The global batch: all replicas' examples of one step."""
    augmentation: Augmentation = dataclasses.field(default_factory=Augmentation)
    shuffle_buffer: int = 10_000
    cache: bool = True
    deterministic: bool = True
    """Training batches in the order the seed draws them. False lets the parallel maps hand
    over what finishes first: the same seed then trains another model from run to run."""
    autotune: bool = False
    """tf.data's model-based autotuning (off: see `_options`)."""
    one_hot: bool = True
    replicas: int = 1
    """Replicas that share each batch (a `tf.distribute` strategy's `num_replicas_in_sync`)."""
    epochs: tuple[int, int] | None = None
    """`(first, end)`: the training pipeline is one dataset of epochs `first` to `end - 1`, in
    turn, each epoch's order and augmentation drawn from the seed and the epoch's number, so a
    run resumed at epoch `first` sees what it would have seen uninterrupted. None: one epoch,
    reshuffled on each pass."""
    steps_per_execution: int = 1
    """The training's batches per `tf.function` call: with `epochs`, each epoch's batches are
    whole calls (see `fit_steps`)."""


def _options(pipeline: PipelineSpec) -> tf.data.Options:
    # `pipeline.deterministic` goes to our own parallel maps, never to `options.deterministic`:
    # that global option also frees the order of parallel ops upstream that we do not write
    # (TFDS's reads, tf.data's own rewrites), and the splits pick examples by their position
    # in the source (data.py), so a free order gave each pass over the data another
    # validation split (tests/tf_alexnet/test_data.py).
    options = tf.data.Options()
    # Each worker reads its own share of examples (FILE would need >= 1 file per worker).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # No model-based autotuning: Keras makes a new iterator each epoch, and freeing the last one
    # waits out its autotuning thread's sleep, which doubles up to a minute (TF 2.21). Measured
    # on the `cpu` preset: 17 s of one 41 s epoch spent idle there, none with autotuning off.
    # `AUTOTUNE` then means one parallel map call per core and a self-sizing prefetch buffer;
    # the model trains at a tenth of what the pipeline delivers (docs/benchmarks/pipeline.md).
    options.autotune.enabled = pipeline.autotune
    return options


@contextlib.contextmanager
def device_datasets_without_autotune() -> Iterator[None]:
    """Within: the per-device datasets a `tf.distribute` strategy feeds its replicas from run
    without model-based autotuning too, as the pipelines they draw from do (see `_options`).

    MirroredStrategy splits each batch over its devices through a `MultiDeviceIterator`, whose
    per-device datasets TensorFlow builds with default options (autotuning on, TF 2.21), so
    freeing each epoch's iterator waited for their autotuning threads as well: up to 16 s at
    the end of a fit of 26 s of work on two logical CPUs, none with this. Patches
    `tensorflow.python.data.ops.multi_device_iterator_ops._create_device_dataset` meanwhile.
    """
    from tensorflow.python.data.ops import multi_device_iterator_ops as per_device

    create = per_device._create_device_dataset
    no_autotune = tf.data.Options()
    no_autotune.autotune.enabled = False

    def create_without_autotune(*args: Any, **kwargs: Any) -> tf.data.Dataset:
        return create(*args, **kwargs).with_options(no_autotune)

    per_device._create_device_dataset = create_without_autotune
    try:
        yield
    finally:
        per_device._create_device_dataset = create


def _labels(label: tf.Tensor, pipeline: PipelineSpec, num_classes: int) -> tf.Tensor:
    return tf.one_hot(label, num_classes) if pipeline.one_hot else label


def fit_steps(batches: int, steps_per_execution: int) -> tuple[int, int]:
    """(steps per epoch, steps per execution) for `fit` over one iterator of many epochs.

    Keras runs whole executions: an epoch of 468 batches at 32 steps per execution would take
    480, so each epoch would start 12 batches into the next one's data, and the last would run
    out. The steps per execution become the divisor of the epoch's batches nearest below the
    ones asked for, down to half of them (468 at 32: 26); failing that, the count that leaves
    the fewest batches over, which each epoch drops, as batching drops its last partial batch
    (421 at 32: 30, the last batch dropped).
    """
    if batches <= steps_per_execution:
        return batches, batches
    lowest = (steps_per_execution + 1) // 2
    candidates = range(steps_per_execution, lowest - 1, -1)
    per_execution = min(candidates, key=lambda steps: batches % steps)  # the largest of ties
    return batches - batches % per_execution, per_execution


def training_pipeline(
    ds: tf.data.Dataset,
    pipeline: PipelineSpec,
    seed: int,
    num_classes: int,
    pca: tuple[np.ndarray, np.ndarray] | None = None,
    epoch_steps: int | None = None,
) -> tf.data.Dataset:
    """Cache -> shuffle examples -> per-image seeded resize/augment -> batch (drop remainder),
    for one epoch or for `pipeline.epochs` (see `PipelineSpec.epochs`), each of them cut to
    `epoch_steps` batches if set (see `fit_steps`)."""
    needed = max(pipeline.image_size)
    if pipeline.augmentation.crop != "none":  # cropped from an enlarged canvas
        needed = round(needed / pipeline.augmentation.crop_fraction)
    ds = shrink_large(ds, SOURCE_MARGIN * needed)
    if pipeline.cache:
        ds = ds.cache()
    if pipeline.epochs is None:
        seed_tensor = tf.constant(seed, tf.int64)
        batches = _epoch_batches(ds, pipeline, seed_tensor, num_classes, pca, reshuffle=True)
    else:

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            epoch_seed = tf.constant(seed, tf.int64) * EPOCH_SEED_STRIDE + epoch
            batches = _epoch_batches(ds, pipeline, epoch_seed, num_classes, pca, reshuffle=False)
            return batches if epoch_steps is None else batches.take(epoch_steps)

        batches = tf.data.Dataset.range(*pipeline.epochs).flat_map(epoch_batches)
    return batches.prefetch(AUTOTUNE).with_options(_options(pipeline))


EPOCH_SEED_STRIDE = 1_000_003
"""Epoch `e` of a run seeded `s` shuffles and augments with seed `s * stride + e`."""


def _epoch_batches(
    ds: tf.data.Dataset,
    pipeline: PipelineSpec,
    seed: tf.Tensor,
    num_classes: int,
    pca: tuple[np.ndarray, np.ndarray] | None,
    reshuffle: bool,
) -> tf.data.Dataset:
    """One epoch's batches: shuffled, prepared (augmented) per image, remainder dropped."""
    ds = ds.shuffle(pipeline.shuffle_buffer, seed=seed, reshuffle_each_iteration=reshuffle)
    spec = pipeline.augmentation
    if not spec.enabled and _uniform_shapes(ds):
        # No per-image randomness: preprocess whole batches, much cheaper per image.
        return ds.batch(pipeline.batch_size, drop_remainder=True).map(
            lambda images, labels: _prepare(images, labels, pipeline, num_classes),
            num_parallel_calls=AUTOTUNE,
            deterministic=pipeline.deterministic,
        )
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle).batch(2)

    def prepare(example: tuple[tf.Tensor, tf.Tensor], pair: tf.Tensor) -> tuple[Any, Any]:
        image, label = example
        if not spec.enabled:
            return _prepare(image, label, pipeline, num_classes)
        image = tf.image.convert_image_dtype(to_channels(image, pipeline.channels), tf.float32)
        image = augment(image, pipeline.image_size, pair, spec, pca)
        return image, _labels(label, pipeline, num_classes)

    ds = tf.data.Dataset.zip(ds, seeds).map(
        prepare, num_parallel_calls=AUTOTUNE, deterministic=pipeline.deterministic
    )
    return ds.batch(pipeline.batch_size, drop_remainder=True)


def evaluation_pipeline(
    ds: tf.data.Dataset, pipeline: PipelineSpec, num_classes: int
) -> tf.data.Dataset:
    """Resize and scale only, in order, every example kept."""
    ds = shrink_large(ds, SOURCE_MARGIN * max(pipeline.image_size))
    if pipeline.cache:
        ds = ds.cache()
    prepare = functools.partial(_prepare, pipeline=pipeline, num_classes=num_classes)
    if _uniform_shapes(ds):
        ds = ds.batch(pipeline.batch_size).map(
            prepare, num_parallel_calls=AUTOTUNE, deterministic=True
        )
    else:
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.batch(pipeline.batch_size)
    return ds.prefetch(AUTOTUNE).with_options(_options(pipeline))


def shrink_large(ds: tf.data.Dataset, limit: int) -> tf.data.Dataset:
    """`(image, label)` examples with images larger than `limit` shrunk to it (`shrink`), in
    order; a dataset of known small shapes (Fashion-MNIST) is returned as it is."""
    shape = ds.element_spec[0].shape
    if shape.is_fully_defined() and min(shape[0], shape[1]) <= limit:
        return ds
    return ds.map(
        lambda image, label: (shrink(image, limit), label),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _uniform_shapes(ds: tf.data.Dataset) -> bool:
    return bool(ds.element_spec[0].shape.is_fully_defined())


def _prepare(
    image: tf.Tensor, label: tf.Tensor, pipeline: PipelineSpec, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Image(s) resized and scaled for the model; labels one-hot if the pipeline asks."""
    image = preprocess(image, pipeline.image_size, pipeline.channels)
    return image, _labels(label, pipeline, num_classes)
