"""Datasets: TFDS or an image folder -> seeded train/validation/test splits -> tf.data pipelines.

Sources yield `(uint8 image [h, w, c], int label)` at their own resolution. The pipelines
cache at that resolution, shuffle examples, then resize (and augment, for training only)
in a parallel map, batch and prefetch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any

import numpy as np
import tensorflow as tf

from tf_alexnet import contract
from tf_alexnet.augment import Augmentation, augment, rgb_pca
from tf_alexnet.errors import UserError
from tf_alexnet.preprocess import decode, preprocess, to_channels
from tf_alexnet.specs import DataSpec  # declared there (no TensorFlow), used here

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Source:
    """Examples at source resolution, before splitting off validation."""

    train: tf.data.Dataset
    num_train: int
    test: tf.data.Dataset | None
    num_test: int
    class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """How to feed a model: input size, batching, augmentation and tf.data options."""

    image_size: tuple[int, int]
    channels: int
    batch_size: int
    augmentation: Augmentation = dataclasses.field(default_factory=Augmentation)
    shuffle_buffer: int = 10_000
    cache: bool = True
    deterministic: bool = False
    one_hot: bool = True


@dataclasses.dataclass(frozen=True)
class Datasets:
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: tuple[str, ...]
    num_train: int
    num_validation: int
    num_test: int


def load_source(spec: DataSpec) -> Source:
    """Opens the configured source (an image folder, else a TFDS dataset)."""
    if spec.image_folder:
        return folder_source(spec.image_folder)
    return tfds_source(spec.dataset, spec.data_dir, spec.manual_dir)


def tfds_source(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> Source:
    """A TFDS image-classification dataset, prepared offline from `manual_dir` if given."""
    import tensorflow_datasets as tfds  # slow import, only when TFDS is the source

    data_dir = data_dir or os.environ.get(contract.ENV_DATA_DIR) or None
    manual_dir = manual_dir or os.environ.get(contract.ENV_MANUAL_DIR) or None
    if manual_dir and not os.path.isdir(manual_dir):
        raise UserError(f"The manual-download folder {manual_dir!r} does not exist.")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise UserError(f"Unknown TFDS dataset {name!r}.") from err
    image_key, label_key = _supervised_keys(builder, name)
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except Exception as err:  # TFDS raises many types: network, checksums, missing files
        hint = (
            f" Put the original files in a folder and pass --manual-dir or set "
            f"${contract.ENV_MANUAL_DIR}."
            if not manual_dir
            else ""
        )
        raise UserError(
            f"Could not prepare TFDS dataset {name!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}.{hint}"
        ) from err
    splits = builder.info.splits
    if "train" not in splits:
        raise UserError(f"TFDS dataset {name!r} has no 'train' split: {sorted(splits)}.")
    label_feature = builder.info.features[label_key]

    def read(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))

    has_test = "test" in splits
    return Source(
        train=read("train"),
        num_train=splits["train"].num_examples,
        test=read("test") if has_test else None,
        num_test=splits["test"].num_examples if has_test else 0,
        class_names=tuple(label_feature.names),
    )


def _supervised_keys(builder: Any, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    if (
        not keys
        or len(keys) != 2
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
        or features[keys[0]].shape[-1] not in (1, 3)
    ):
        raise UserError(
            f"TFDS dataset {name!r} is not an image-classification dataset "
            f"(expected supervised keys (image, label) with 1 or 3 channels; got {keys!r})."
        )
    return keys[0], keys[1]


def folder_source(root: str | os.PathLike[str], channels: int = 3) -> Source:
    """Images in `root/<class>/*` (or `root/train/<class>/*` and `root/test/<class>/*`).

    Images are decoded to `channels` (1 or 3) at their own size; class names are the
    sorted subfolder names.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UserError(f"The image folder {str(root)!r} does not exist.")
    has_test = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if has_test else root
    class_names = tuple(sorted(p.name for p in train_root.iterdir() if p.is_dir()))
    if not class_names:
        raise UserError(f"The image folder {str(train_root)!r} has no class subfolders.")

    def listing(folder: pathlib.Path) -> tuple[list[str], list[int]]:
        paths, labels = [], []
        for label, name in enumerate(class_names):
            files = sorted(
                p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
            )
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        if not paths:
            raise UserError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}.")
        return paths, labels

    def read(paths: list[str], labels: list[int]) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((paths, np.array(labels, np.int32)))
        return ds.map(
            lambda path, label: (decode(tf.io.read_file(path), channels), label),
            num_parallel_calls=AUTOTUNE,
        )

    train_paths, train_labels = listing(train_root)
    test_paths, test_labels = listing(root / "test") if has_test else ([], [])
    return Source(
        train=read(train_paths, train_labels),
        num_train=len(train_paths),
        test=read(test_paths, test_labels) if has_test else None,
        num_test=len(test_paths),
        class_names=class_names,
    )


def split_masks(num: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Seeded disjoint boolean masks over `num` examples: one per fraction, then the rest."""
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


def _select(ds: tf.data.Dataset, mask: np.ndarray) -> tf.data.Dataset:
    keep = tf.constant(mask)
    selected = ds.enumerate().filter(lambda i, _: keep[i]).map(lambda _, example: example)
    return selected.apply(tf.data.experimental.assert_cardinality(int(mask.sum())))


def make_datasets(data: DataSpec, pipeline: PipelineSpec, source: Source | None = None) -> Datasets:
    """Seeded train/validation/test splits fed through the training and evaluation pipelines."""
    for name in ("validation_fraction", "test_fraction"):
        if not 0.0 <= getattr(data, name) < 1.0:
            raise UserError(f"`{name}` should be in [0, 1). Received: {getattr(data, name)}")
    source = source or load_source(data)
    pipeline.augmentation.check_channels(pipeline.channels)
    if source.test is not None:
        validation_mask, train_mask = split_masks(
            source.num_train, (data.validation_fraction,), data.seed
        )
        test, num_test = source.test, source.num_test
    else:
        validation_mask, test_mask, train_mask = split_masks(
            source.num_train, (data.validation_fraction, data.test_fraction), data.seed
        )
        test, num_test = _select(source.train, test_mask), int(test_mask.sum())
    if data.train_examples is not None:
        if data.train_examples < 1:
            raise UserError(
                f"`train_examples` should be a positive integer. Received: {data.train_examples}"
            )
        train_mask[np.flatnonzero(train_mask)[data.train_examples :]] = False
    num_train, num_validation = int(train_mask.sum()), int(validation_mask.sum())
    if num_train < pipeline.batch_size:
        raise UserError(
            f"Only {num_train} training examples for a batch of {pipeline.batch_size}: "
            f"lower --batch-size or use more data."
        )
    if num_validation == 0:
        raise UserError("The validation split is empty: raise `validation_fraction`.")
    train = _select(source.train, train_mask)
    validation = _select(source.train, validation_mask)
    pca = None
    if pipeline.augmentation.pca_lighting:
        pca = rgb_pca(_sample_pixels(train, pipeline.channels))
    num_classes = len(source.class_names)
    return Datasets(
        train=training_pipeline(train, pipeline, data.seed, num_classes, pca),
        validation=evaluation_pipeline(validation, pipeline, num_classes),
        test=evaluation_pipeline(test, pipeline, num_classes),
        class_names=source.class_names,
        num_train=num_train,
        num_validation=num_validation,
        num_test=num_test,
    )


def _sample_pixels(ds: tf.data.Dataset, channels: int, count: int = 1000) -> np.ndarray:
    """Up to `count` images' pixels in [0, 1] (for the PCA colour noise)."""
    sample = ds.take(count).map(
        lambda image, _: tf.reshape(to_channels(image, channels), [-1, channels])
    )
    return np.concatenate([p.numpy() for p in sample]).astype(np.float32) / 255.0


def _options(pipeline: PipelineSpec) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = pipeline.deterministic
    # Each worker reads its own share of examples (FILE would need >= 1 file per worker).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _labels(label: tf.Tensor, pipeline: PipelineSpec, num_classes: int) -> tf.Tensor:
    return tf.one_hot(label, num_classes) if pipeline.one_hot else label


def training_pipeline(
    ds: tf.data.Dataset,
    pipeline: PipelineSpec,
    seed: int,
    num_classes: int,
    pca: tuple[np.ndarray, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Cache -> shuffle examples -> per-image seeded resize/augment -> batch (drop remainder)."""
    if pipeline.cache:
        ds = ds.cache()
    ds = ds.shuffle(pipeline.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    spec = pipeline.augmentation

    if not spec.enabled and _uniform_shapes(ds):
        # No per-image randomness: preprocess whole batches, much cheaper per image.
        ds = ds.batch(pipeline.batch_size, drop_remainder=True).map(
            lambda images, labels: _prepare(images, labels, pipeline, num_classes),
            num_parallel_calls=AUTOTUNE,
            deterministic=pipeline.deterministic,
        )
        return ds.prefetch(AUTOTUNE).with_options(_options(pipeline))

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
    return (
        ds.batch(pipeline.batch_size, drop_remainder=True)
        .prefetch(AUTOTUNE)
        .with_options(_options(pipeline))
    )


def evaluation_pipeline(
    ds: tf.data.Dataset, pipeline: PipelineSpec, num_classes: int
) -> tf.data.Dataset:
    """Resize and scale only, in order, every example kept."""
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


def _uniform_shapes(ds: tf.data.Dataset) -> bool:
    return bool(ds.element_spec[0].shape.is_fully_defined())


def _prepare(
    image: tf.Tensor, label: tf.Tensor, pipeline: PipelineSpec, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Image(s) resized and scaled for the model; labels one-hot if the pipeline asks."""
    image = preprocess(image, pipeline.image_size, pipeline.channels)
    return image, _labels(label, pipeline, num_classes)


def sample_images(spec: DataSpec, count: int = 8) -> list[bytes]:
    """The first `count` test images of the source (train if it has no test split), as PNG."""
    source = load_source(spec)
    examples = (source.test if source.test is not None else source.train).take(count)
    return [tf.io.encode_png(image).numpy() for image, _ in examples]
