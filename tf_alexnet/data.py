"""Datasets: a source split into seeded train/validation/test sets, fed through the pipelines.

Sources (TFDS, image folders) are in `tf_alexnet.sources`, the tf.data pipelines in
`tf_alexnet.pipeline`; `make_datasets` joins them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_alexnet.augment import rgb_pca
from tf_alexnet.errors import UserError
from tf_alexnet.pipeline import (
    PipelineSpec,
    evaluation_pipeline,
    fit_steps,
    training_pipeline,
)
from tf_alexnet.preprocess import to_channels
from tf_alexnet.sources import Source, load_source, reading_images
from tf_alexnet.specs import DataSpec  # declared there (no TensorFlow), used here


@dataclasses.dataclass(frozen=True)
class Datasets:
    train: tf.data.Dataset
    validation: tf.data.Dataset | None  # None: `validation_fraction=0`, train on everything
    test: tf.data.Dataset
    class_names: tuple[str, ...]
    num_train: int
    num_validation: int
    num_test: int
    steps_per_epoch: int
    """Training batches per epoch (`fit_steps`: whole executions with `epochs`)."""
    steps_per_execution: int
    files: tuple[str, ...] = ()  # an image folder's files
    skipped: tuple[str, ...] = ()  # an image folder's files of other types, not read
    absent: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """An image folder's classes of which a split ("training", "validation", "test") holds no
    image: a class too small to spare one, or any small class when the splits are drawn over
    all images (`stratify` false). Unknown (empty) for TFDS datasets."""

    stratified: bool = False
    """Whether the splits were drawn class by class (`DataSpec.stratify`, an image folder)."""

    listing: dict[str, Any] | None = None
    """An image folder's listing of the images the splits are drawn from (`folder_listing`):
    a run records it, since other images (one added, one removed) draw other splits."""

    @property
    def validated(self) -> bool:
        """Whether a validation split is held out (`validation_fraction > 0`)."""
        return self.validation is not None

    def absent_notes(self, splits: tuple[str, ...] = ("training", "validation")) -> list[str]:
        """One line for each of `splits` that lacks a class, saying what that costs."""
        costs = {
            "training": "the model never learns them",
            "validation": "val_accuracy, and so the best epoch, leave them out",
            "test": "their rows of the report are zeros, and the macro average counts their "
            "recall as 0",
        }
        notes = []
        for split in splits:
            if names := self.absent.get(split):
                shown = ", ".join(map(repr, names[:5])) + (", ..." if len(names) > 5 else "")
                why = (
                    "Each split takes its share of every class, and these have too few images "
                    "to spare one: add images of these classes."
                    if self.stratified
                    else "The splits are drawn at random over all images, not class by class "
                    "(--no-stratify): add images of these classes, or split class by class."
                )
                notes.append(
                    f"Note: the {split} split holds no image of {len(names)} class(es), {shown}: "
                    f"{costs[split]}. {why}"
                )
        return notes

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Turns a decoding failure in the pipelines into one line naming the unreadable images
        (TensorFlow's own error names no file). The pipelines decode lazily, so a bad file in
        an image folder fails training or evaluation only when it is reached."""
        with reading_images(self.files):
            yield


def split_masks(
    num: int,
    fractions: tuple[float, ...],
    seed: int,
    labels: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Seeded disjoint boolean masks over `num` examples: one per fraction, then the rest.
    With `labels`, class by class (`stratified_masks`), else at random over all examples."""
    if labels is not None:
        return stratified_masks(np.asarray(labels), fractions, seed)
    order = np.random.default_rng(seed).permutation(num)
    masks, start = [], 0
    for fraction in fractions:
        count = round(num * fraction)
        mask = np.zeros(num, bool)
        mask[order[start : start + count]] = True
        masks.append(mask)
        start += count
    rest = np.zeros(num, bool)
    rest[order[start:]] = True
    return [*masks, rest]


def stratified_masks(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """`split_masks` class by class: each fraction of each class's examples (rounded), drawn
    at random within the class. A split asked for gets at least one example of every class
    that can spare it while keeping one for the rest (training): a class of 3 examples is in
    the validation, test and training splits alike, where a draw over all examples left a
    small class out of a split most of the time."""
    rng = np.random.default_rng(seed)
    masks = [np.zeros(len(labels), bool) for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):  # in order of label: the same draw for the same data
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = [round(len(members) * fraction) for fraction in fractions]
        for i, fraction in enumerate(fractions):
            if fraction > 0 and counts[i] == 0 and len(members) - sum(counts) > 1:
                counts[i] = 1
        start = 0
        for mask, count in zip(masks, counts, strict=False):
            mask[members[start : start + count]] = True
            start += count
        masks[-1][members[start:]] = True
    return masks


def _select(ds: tf.data.Dataset, mask: np.ndarray) -> tf.data.Dataset:
    keep = tf.constant(mask)
    selected = ds.enumerate().filter(lambda i, _: keep[i]).map(lambda _, example: example)
    return selected.apply(tf.data.experimental.assert_cardinality(int(mask.sum())))


def make_datasets(
    data: DataSpec, pipeline: PipelineSpec, source: Source | None = None, *, training: bool = True
) -> Datasets:
    """Seeded train/validation/test splits fed through the training and evaluation pipelines.

    With `training` (the default) the training split must fill one batch; evaluating a model
    on the test split alone (`training=False`) asks nothing of the training split's size.
    """
    for name in ("validation_fraction", "test_fraction"):
        if not 0.0 <= getattr(data, name) < 1.0:
            raise UserError(f"`{name}` should be in [0, 1). Received: {getattr(data, name)}")
    source = source or load_source(data)
    pipeline.augmentation.check_channels(pipeline.channels)
    labels = np.asarray(source.labels) if source.labels else None  # an image folder's
    strata = labels if data.stratify else None
    if source.test is not None:
        validation_mask, train_mask = split_masks(
            source.num_train, (data.validation_fraction,), data.seed, strata
        )
        test, num_test = source.test, source.num_test
    else:
        validation_mask, test_mask, train_mask = split_masks(
            source.num_train, (data.validation_fraction, data.test_fraction), data.seed, strata
        )
        test, num_test = _select(source.train, test_mask), int(test_mask.sum())
    if data.train_examples is not None:
        if data.train_examples < 1:
            raise UserError(
                f"`train_examples` should be a positive integer. Received: {data.train_examples}"
            )
        # A seeded random subset, not the first images: an image folder lists class by class.
        kept = np.random.default_rng(data.seed).permutation(np.flatnonzero(train_mask))
        train_mask[kept[data.train_examples :]] = False
    num_split = int(validation_mask.sum())
    validation_mask = _even_for_replicas(validation_mask, pipeline.replicas)
    num_train, num_validation = int(train_mask.sum()), int(validation_mask.sum())
    if training and num_train < pipeline.batch_size:
        raise UserError(
            f"Only {num_train} training examples for a batch of {pipeline.batch_size}: "
            f"lower --batch-size or use more data."
        )
    if num_validation == 0 and num_split > 0:
        raise UserError(
            f"The validation split holds {num_split} image(s), fewer than the "
            f"{pipeline.replicas} replicas that share each batch: raise `validation_fraction` "
            "(or set it to 0 to train on every training image)."
        )
    if num_validation == 0 and data.validation_fraction > 0:
        raise UserError(
            "The validation split is empty: raise `validation_fraction` (or set it to 0 to "
            f"train on every training image). Received: validation_fraction="
            f"{data.validation_fraction}"
        )
    absent = {}
    if labels is not None:
        absent["training"] = _absent(labels[train_mask], source.class_names)
        if data.validation_fraction > 0:
            absent["validation"] = _absent(labels[validation_mask], source.class_names)
        if source.test is not None:  # a test/ folder
            absent["test"] = _absent(np.asarray(source.test_labels), source.class_names)
        else:
            absent["test"] = _absent(labels[test_mask], source.class_names)
    train = _select(source.train, train_mask)
    validation = _select(source.train, validation_mask) if num_validation else None
    pca = None
    if pipeline.augmentation.pca_lighting:
        pca = rgb_pca(_sample_pixels(train, pipeline.channels))
    num_classes = len(source.class_names)
    steps, per_execution = num_train // pipeline.batch_size, pipeline.steps_per_execution
    if pipeline.epochs is not None:  # one iterator for every epoch: each of whole executions
        steps, per_execution = fit_steps(steps, per_execution)
    return Datasets(
        train=training_pipeline(
            train,
            pipeline,
            data.seed,
            num_classes,
            pca,
            epoch_steps=steps if pipeline.epochs is not None else None,
        ),
        validation=(
            evaluation_pipeline(validation, pipeline, num_classes)
            if validation is not None
            else None
        ),
        test=evaluation_pipeline(test, pipeline, num_classes),
        class_names=source.class_names,
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
        steps_per_epoch=steps,
        steps_per_execution=per_execution,
        files=source.files,
        skipped=source.skipped,
        absent=absent,
        stratified=strata is not None,
        listing=folder_listing(source, data.image_folder) if data.image_folder else None,
    )


def folder_listing(source: Source, root: str) -> dict[str, Any]:
    """The count and a digest of an image folder's training images (relative to `root`, in
    order): the splits are drawn by position among them, so any change moves every split.
    `test_folder`: whether the test split is a test/ folder of its own."""
    paths = [os.path.relpath(path, root) for path in source.files[: source.num_train]]
    digest = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    return {
        "train_images": len(paths),
        "train_listing_sha256": digest,
        "test_folder": source.test is not None,
    }


def _absent(labels: np.ndarray, class_names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the classes that `labels` (a split's) lacks."""
    present = set(labels.tolist())
    return tuple(name for i, name in enumerate(class_names) if i not in present)


def _even_for_replicas(mask: np.ndarray, replicas: int) -> np.ndarray:
    """The validation mask less its last `count % replicas` examples, so that every batch,
    the last included, splits evenly over the replicas (the global batch is a multiple).

    Under a multi-replica strategy Keras 3.15 fails on other batches: it builds the model
    from the first batch of `evaluate`'s data by averaging the replicas' shares ("Inputs to
    operation AddN ... must have the same size and shape"), and a replica handed no example
    fails in batch normalization ("Incompatible shapes: [0,14,14,32] vs. [64]").
    """
    extra = int(mask.sum()) % replicas
    if extra == 0:
        return mask
    mask = mask.copy()
    mask[np.flatnonzero(mask)[-extra:]] = False
    return mask


def _sample_pixels(ds: tf.data.Dataset, channels: int, count: int = 1000) -> np.ndarray:
    """Up to `count` images' pixels in [0, 1] (for the PCA colour noise)."""
    sample = ds.take(count).map(
        lambda image, _: tf.reshape(to_channels(image, channels), [-1, channels])
    )
    return np.concatenate([p.numpy() for p in sample]).astype(np.float32) / 255.0
