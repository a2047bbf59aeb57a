"""The input pipeline on real Fashion-MNIST and on image folders."""

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FASHION_MNIST
from tf_alexnet import config as config_lib
from tf_alexnet.augment import Augmentation, augment, rgb_pca
from tf_alexnet.data import make_datasets, split_masks
from tf_alexnet.errors import UserError
from tf_alexnet.pipeline import (
    PipelineSpec,
    device_datasets_without_autotune,
    evaluation_pipeline,
    shrink_large,
)
from tf_alexnet.preprocess import decode, preprocess, shrink
from tf_alexnet.sources import (
    folder_source,
    image_files,
    in_colour,
    skipped_notice,
    unreadable_images,
)
from tf_alexnet.specs import DataSpec
from tf_alexnet.strategy import make_strategy

AUGMENTED = Augmentation(flip=True, crop="pad", brightness=0.2, contrast=0.3)


def _first_batch(ds):
    return next(iter(ds))


def test_fashion_mnist_splits(fashion_mnist):
    datasets = make_datasets(
        DataSpec(), PipelineSpec(image_size=(32, 32), channels=1, batch_size=500)
    )
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (
        54_000,
        6_000,
        10_000,
    )
    assert datasets.class_names[0] == "T-shirt/top" and datasets.validated
    images, labels = _first_batch(datasets.validation)
    assert images.shape == (500, 32, 32, 1) and images.dtype == tf.float32
    assert labels.shape == (500, 10)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    # Fashion-MNIST's mean pixel is 0.286 (72.94 / 255).
    assert abs(float(tf.reduce_mean(images)) - 0.286) < 0.03
    assert datasets.train.cardinality() == 54_000 // 500
    assert datasets.test.cardinality() == 20


def test_split_masks_are_seeded_disjoint_and_complete():
    validation, test, train = split_masks(1000, (0.1, 0.2), seed=3)
    assert (validation.sum(), test.sum(), train.sum()) == (100, 200, 700)
    assert not np.any(validation & test) and not np.any(validation & train)
    assert np.all(validation | test | train)
    again = split_masks(1000, (0.1, 0.2), seed=3)
    assert np.array_equal(again[0], validation)
    assert not np.array_equal(split_masks(1000, (0.1, 0.2), seed=4)[0], validation)


def test_train_examples_limits_training_only(fashion_mnist):
    datasets = make_datasets(
        DataSpec(train_examples=256), PipelineSpec(image_size=(28, 28), channels=3, batch_size=64)
    )
    assert datasets.num_train == 256 and datasets.num_validation == 6_000
    images, _ = _first_batch(datasets.train)
    assert images.shape == (64, 28, 28, 3)
    np.testing.assert_allclose(images[..., 0], images[..., 2])  # gray replicated to RGB
    assert sum(1 for _ in datasets.train) == 4


def test_validation_fraction_zero_holds_nothing_out(fashion_mnist):
    datasets = make_datasets(
        DataSpec(train_examples=256, validation_fraction=0),
        PipelineSpec(image_size=(28, 28), channels=1, batch_size=64),
    )
    assert datasets.validation is None and not datasets.validated
    assert (datasets.num_train, datasets.num_validation) == (256, 0)


def test_pipelines_run_without_tf_data_autotuning(fashion_mnist):
    """Keras frees each epoch's iterator; with autotuning on, freeing it waited out the sleep of
    its autotuning thread (17 s of a 41 s epoch of the `cpu` preset, up to a minute in TF 2.21:
    docs/benchmarks/pipeline.md). Training and evaluation batches alike."""
    datasets = make_datasets(
        DataSpec(train_examples=256),
        PipelineSpec(image_size=(28, 28), channels=1, batch_size=64, augmentation=AUGMENTED),
    )
    for dataset in (datasets.train, datasets.validation):
        assert dataset.options().autotune.enabled is False
        images, _ = _first_batch(dataset)  # AUTOTUNE settings still run without the tuner
        assert images.shape == (64, 28, 28, 1)
    tuned = make_datasets(
        DataSpec(train_examples=256),
        PipelineSpec(image_size=(28, 28), channels=1, batch_size=64, autotune=True),
    )
    assert tuned.train.options().autotune.enabled is True


def _per_device_autotune(strategy, dataset):
    """The autotune option of each dataset a mirrored strategy feeds its replicas from."""
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    next(iterator)
    per_device = iterator._iterators[0]._iterator._device_iterators  # TF 2.21's layout
    return [device_iterator._dataset.options().autotune.enabled for device_iterator in per_device]


def test_mirrored_replicas_are_fed_without_tf_data_autotuning():
    """MirroredStrategy feeds each replica from a per-device dataset that TensorFlow builds
    with default options, ignoring the source's: autotuning on, so freeing each epoch's
    iterator waited for their tuning threads too (docs/benchmarks/mirrored_epochs*.md).
    `device_datasets_without_autotune`, around `fit` in `train`, turns it off there."""
    strategy = make_strategy("mirrored")  # the 2 logical CPUs (conftest)
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.range(8).batch(4).with_options(options)
    # Still needed: TensorFlow leaves autotuning unset (on) in the per-device datasets.
    assert _per_device_autotune(strategy, dataset) == [None, None]
    with device_datasets_without_autotune():
        assert _per_device_autotune(strategy, dataset) == [False, False]
    assert _per_device_autotune(strategy, dataset) == [None, None]  # undone on leaving
    with pytest.raises(KeyError), device_datasets_without_autotune():
        raise KeyError("a failed fit")
    assert _per_device_autotune(strategy, dataset) == [None, None]


@pytest.mark.slow
def test_seeded_pipeline_is_deterministic(fashion_mnist):
    def batch(seed):
        spec = PipelineSpec(
            image_size=(32, 32),
            channels=1,
            batch_size=32,
            augmentation=AUGMENTED,
            deterministic=True,
        )
        return _first_batch(make_datasets(DataSpec(seed=seed, train_examples=512), spec).train)

    first, second, other = batch(7), batch(7), batch(8)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


@pytest.mark.slow
def test_the_same_seed_gives_the_same_training_batches_by_default(fashion_mnist):
    """The default order was free (parallel maps handed over the batch that finished first):
    the same seed fed 3 different orders in 6 builds of one quiet process here, and the same
    command, or a resumed run, trained another model (0.34 against 0.53 validation accuracy
    after one epoch of a test's run, in CI). The per-image maps of augmented runs take the
    same setting."""
    data = DataSpec(train_examples=2048, validation_fraction=0.02)
    spec = config_lib.from_dict({"variant": "mini", "image_size": 28}).pipeline_spec(64)
    assert spec.deterministic and not spec.augmentation.enabled
    orders = set()
    for _ in range(4):
        digest = hashlib.sha1()
        for images, _labels in make_datasets(data, spec).train:
            digest.update(images.numpy().tobytes())
        orders.add(digest.hexdigest())
    assert len(orders) == 1, f"{len(orders)} orders in 4 builds"


@pytest.mark.slow
def test_augmentation_only_in_training(fashion_mnist):
    plain = PipelineSpec(image_size=(32, 32), channels=1, batch_size=64, deterministic=True)
    augmented = PipelineSpec(
        image_size=(32, 32), channels=1, batch_size=64, augmentation=AUGMENTED, deterministic=True
    )
    data = DataSpec(train_examples=128)
    plain_sets, augmented_sets = make_datasets(data, plain), make_datasets(data, augmented)
    for split in ("validation", "test"):
        np.testing.assert_array_equal(
            _first_batch(getattr(plain_sets, split))[0],
            _first_batch(getattr(augmented_sets, split))[0],
        )
    # Same examples in the same order, but the augmented ones differ.
    plain_images, plain_labels = _first_batch(plain_sets.train)
    aug_images, aug_labels = _first_batch(augmented_sets.train)
    np.testing.assert_array_equal(plain_labels, aug_labels)
    assert not np.allclose(plain_images, aug_images)
    # Training epochs draw new augmentations.
    iterate = iter(augmented_sets.train)
    epoch_one = next(iterate)[0]
    epoch_two = _first_batch(augmented_sets.train)[0]
    assert not np.array_equal(epoch_one, epoch_two)


def test_augment_ops_keep_shape_and_range():
    image = tf.random.uniform((28, 28, 3), seed=1)
    seed = tf.constant([1, 2])
    for spec in (
        Augmentation(flip=True),
        Augmentation(crop="pad"),
        Augmentation(crop="resize"),
        Augmentation(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.2),
        Augmentation(flip=True, erase=1.0),
    ):
        out = augment(image, (24, 24), seed, spec)
        assert out.shape == (24, 24, 3)
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0
        np.testing.assert_array_equal(out, augment(image, (24, 24), seed, spec))


def test_flip_flips_and_crop_shifts():
    image = tf.reshape(tf.range(16, dtype=tf.float32) / 16, (4, 4, 1))
    flipped = {
        augment(image, (4, 4), tf.constant([s, 0]), Augmentation(flip=True)).numpy().tobytes()
        for s in range(20)
    }
    assert flipped == {image.numpy().tobytes(), image.numpy()[:, ::-1].tobytes()}
    crops = [
        augment(image, (4, 4), tf.constant([s, 1]), Augmentation(crop="pad", crop_fraction=0.5))
        for s in range(10)
    ]
    assert len({c.numpy().tobytes() for c in crops}) > 1
    assert any(float(tf.reduce_min(c)) == 0.0 and float(tf.reduce_max(c)) < 15 / 16 for c in crops)


def test_random_erase_fills_one_rectangle_with_noise():
    image = tf.zeros((28, 20, 3))
    for s in range(100):
        out = augment(image, (28, 20), tf.constant([s, 5]), Augmentation(erase=1.0)).numpy()
        erased = (out > 0).any(axis=-1)
        rows, cols = np.flatnonzero(erased.any(axis=1)), np.flatnonzero(erased.any(axis=0))
        box = erased[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all()  # one solid rectangle, every channel noise
        area = box.size / erased.size
        assert 0.01 <= area <= 0.45, area  # 0.02-0.4 of the area, give or take rounding
    erased = [
        bool(augment(image, (28, 20), tf.constant([s, 6]), Augmentation(erase=0.5)).numpy().any())
        for s in range(200)
    ]
    assert 70 <= sum(erased) <= 130  # about half the images
    # Erasing leaves the other augmentations' draws as they were, outside its rectangle.
    picture = tf.random.uniform((16, 16, 1), seed=3)
    seed = tf.constant([9, 9])
    flipped = augment(picture, (16, 16), seed, Augmentation(flip=True, brightness=0.2)).numpy()
    both = augment(picture, (16, 16), seed, Augmentation(flip=True, brightness=0.2, erase=1.0))
    differs = (both.numpy() != flipped)[..., 0]
    assert 0 < differs.sum() <= 0.45 * differs.size


def test_pca_lighting_shifts_colours_along_eigenvectors():
    pixels = np.random.default_rng(0).uniform(size=(1000, 3)).astype("float32")
    pixels[:, 1] = pixels[:, 0]  # channels 0 and 1 fully correlated
    eigenvalues, eigenvectors = rgb_pca(pixels)
    assert eigenvalues[0] >= eigenvalues[1] >= eigenvalues[2] >= -1e-7
    np.testing.assert_allclose(np.abs(eigenvectors[:, 0]), [2**-0.5, 2**-0.5, 0], atol=0.05)
    image = tf.fill((8, 8, 3), 0.5)
    out = augment(
        image,
        (8, 8),
        tf.constant([3, 4]),
        Augmentation(pca_lighting=0.5),
        (eigenvalues, eigenvectors),
    )
    shift = (out - image).numpy().reshape(-1, 3)
    assert np.ptp(shift, axis=0).max() < 1e-6  # one colour shift for the whole image
    assert np.abs(shift).max() > 0


def test_colour_augmentation_needs_rgb():
    with pytest.raises(ValueError, match="needs RGB images"):
        Augmentation(hue=0.1).check_channels(1)
    with pytest.raises(ValueError, match="Received: crop='zoom'"):
        Augmentation(crop="zoom")


def _write_images(folder, count, size, mode):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for i in range(count):
        pixels = rng.integers(0, 255, (size, size + i, channels), dtype=np.uint8)
        encoded = (
            tf.io.encode_png(pixels)
            if i % 2 == 0 or channels == 4
            else tf.io.encode_jpeg(pixels[..., :3] if channels == 4 else pixels)
        )
        tf.io.write_file(
            str(folder / f"{i}.{'png' if i % 2 == 0 or channels == 4 else 'jpg'}"), encoded
        )


def test_image_folder_source(tmp_path):
    _write_images(tmp_path / "cat", 12, 40, "RGB")
    _write_images(tmp_path / "dog", 10, 50, "L")
    _write_images(tmp_path / "fox", 8, 30, "RGBA")
    (tmp_path / "notes.txt").write_text("not a class")
    datasets = make_datasets(
        DataSpec(image_folder=str(tmp_path), validation_fraction=0.2, test_fraction=0.2),
        PipelineSpec(image_size=(32, 32), channels=3, batch_size=4, augmentation=AUGMENTED),
    )
    assert datasets.class_names == ("cat", "dog", "fox")
    assert datasets.num_validation == 6 and datasets.num_test == 6 and datasets.num_train == 18
    images, _ = _first_batch(datasets.train)
    assert images.shape == (4, 32, 32, 3)
    assert sum(int(b[1].shape[0]) for b in datasets.test) == 6


def test_image_folder_with_train_and_test(tmp_path):
    for split, count in (("train", 6), ("test", 3)):
        _write_images(tmp_path / split / "a", count, 20, "RGB")
        _write_images(tmp_path / split / "b", count, 20, "RGB")
    source = folder_source(tmp_path)
    assert (source.num_train, source.num_test, source.class_names) == (12, 6, ("a", "b"))
    # One class trained to a meaningless 100% accuracy.
    _write_images(tmp_path / "single" / "a", 3, 20, "RGB")
    with pytest.raises(UserError, match=r"has one class subfolder \('a'\): .* two or more"):
        folder_source(tmp_path / "single")
    # A test class the training images lack was skipped without a word.
    _write_images(tmp_path / "test" / "zebra", 2, 20, "RGB")
    with pytest.raises(UserError, match=r"test' has class folders that .*train' has not: 'zebra'"):
        folder_source(tmp_path)


def test_image_folders_read_subfolders_and_skip_hidden_files(tmp_path):
    """Class folders are read recursively, as Keras's image_dataset_from_directory does;
    `.ipynb_checkpoints/` was a class and macOS's `._name.png` files failed to decode."""
    _write_images(tmp_path / "a", 3, 20, "RGB")
    _write_images(tmp_path / "a" / "more" / "deeper", 2, 20, "RGB")
    _write_images(tmp_path / "bb", 3, 20, "RGB")
    (tmp_path / "bb" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _write_images(tmp_path / "bb" / ".cache", 2, 20, "RGB")
    _write_images(tmp_path / ".ipynb_checkpoints", 2, 20, "RGB")
    (tmp_path / "bb" / "scan.TIFF").write_bytes(b"II*\x00")
    (tmp_path / "a" / "more" / "README").write_text("where these came from")
    (tmp_path / "notes.txt").write_text("not in a class folder: not a skipped image")
    source = folder_source(tmp_path)
    assert source.class_names == ("a", "bb") and source.num_train == 8
    assert sum("deeper" in name for name in source.files) == 2
    assert not any("/." in name for name in source.files)
    assert sum(1 for _ in source.train) == 8  # every listed file decodes
    assert source.skipped == (str(tmp_path / "a/more/README"), str(tmp_path / "bb/scan.TIFF"))


def test_linked_folders_inside_class_folders_are_read(tmp_path):
    """`Path.rglob` does not follow a linked folder (Python 3.11): 40 of 160 images were left
    out without a word, and a class folder holding only a link was "empty"."""
    _write_images(tmp_path / "elsewhere" / "shots", 3, 20, "RGB")
    _write_images(tmp_path / "data" / "a", 2, 20, "RGB")
    (tmp_path / "data" / "a" / "linked").symlink_to(tmp_path / "elsewhere" / "shots")
    (tmp_path / "data" / "b").mkdir()
    (tmp_path / "data" / "b" / "only").symlink_to(tmp_path / "elsewhere" / "shots")
    (tmp_path / "data" / "b" / "only_again").symlink_to(tmp_path / "elsewhere")  # read once
    (tmp_path / "data" / "a" / "loop").symlink_to(tmp_path / "data" / "a")  # ends
    source = folder_source(tmp_path / "data")
    assert source.class_names == ("a", "b")
    assert source.num_train == 5 + 3
    a_file = tmp_path / "data" / "a" / "0.png"
    with pytest.raises(UserError, match=r"0\.png' is a file, not a folder\.$"):
        folder_source(a_file)  # it said "does not exist"
    assert sum(1 for _ in source.train) == 8


def test_large_images_are_shrunk_before_the_cache_as_serving_shrinks_them():
    """A folder of 120 12-megapixel photos was cached at full size (5.5 GB of RSS, 32 s for 2
    epochs of the quick preset; 1.4 GB and 12 s shrunk). An evaluated image must still be
    resized exactly as the served one (the exported signature calls `preprocess`)."""
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.integers(0, 255, (30, 40, 3)).astype("float32"), (600, 800))
    photo = tf.cast(smooth, tf.uint8)
    assert shrink(photo, 56).shape == (56, 75, 3) and shrink(photo, 56).dtype == tf.uint8
    assert shrink(photo, 600) is photo  # its shorter side is not over the limit
    assert shrink(tf.stack([photo, photo]), 56).shape == (2, 56, 75, 3)
    floats = shrink(tf.image.convert_image_dtype(photo, tf.float32), 56)
    assert floats.dtype == tf.float32 and 0 < float(tf.reduce_max(floats)) <= 1
    encoded = tf.io.encode_png(photo)
    source = tf.data.Dataset.from_generator(
        lambda: iter([(photo.numpy(), 1)]),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32)),
    )
    cached = next(iter(shrink_large(source, 56)))[0]
    assert cached.shape == (56, 75, 3)
    spec = PipelineSpec(image_size=(28, 28), channels=3, batch_size=1, one_hot=False)
    evaluated = next(iter(evaluation_pipeline(source, spec, 2)))[0][0]
    served = preprocess(decode(encoded, 3), (28, 28), 3)
    np.testing.assert_array_equal(evaluated, served)
    # Two shrinks against one: a few levels at most on this smooth image.
    direct = tf.image.resize(
        tf.image.convert_image_dtype(photo, tf.float32), (28, 28), antialias=True
    )
    assert float(tf.reduce_max(tf.abs(served - direct))) < 12 / 255
    known = tf.data.Dataset.from_tensors((tf.zeros((28, 28, 1), tf.uint8), 0))
    assert shrink_large(known, 56) is known  # Fashion-MNIST: no map at all


def test_in_colour_tells_colour_from_gray_stored_as_rgb(tmp_path):
    """Gray images saved as RGB (a JPEG or WebP leaves their channels a level apart) are gray;
    one coloured image among the sampled ones is enough."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (24, 24, 1), dtype=np.uint8)
    paths = []
    for i, encoded in enumerate(
        [
            tf.io.encode_png(np.repeat(gray, 3, axis=2)),
            tf.io.encode_jpeg(np.repeat(gray, 3, axis=2), quality=70),
            tf.io.encode_png(gray),
            tf.io.encode_png(np.concatenate([np.repeat(gray, 3, axis=2), gray], axis=2)),
        ]
    ):
        paths.append(str(tmp_path / f"{i}.img"))
        tf.io.write_file(paths[-1], encoded)
    (tmp_path / "broken.img").write_bytes(b"not an image")
    assert not in_colour([*paths, str(tmp_path / "broken.img")])
    colour = tmp_path / "colour.png"
    tf.io.write_file(str(colour), tf.io.encode_png(rng.integers(0, 255, (24, 24, 3), np.uint8)))
    assert in_colour([*paths, str(colour)])


def test_files_of_other_types_are_named_not_silently_dropped(tmp_path):
    """A folder with TIFF scans trained on the rest without a word, or said "No images"
    without naming what it had found."""
    assert skipped_notice(()) is None
    assert skipped_notice(["x/a/1.tif", "x/b/2.TIF", "x/b/notes.txt", "x/b/LICENSE"]) == (
        "Skipped 4 file(s) that are not JPEG, PNG, GIF, BMP or WebP images (2 .tif, 1 .txt, "
        "1 no suffix), e.g. 'x/a/1.tif'."
    )
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scan.tiff").write_bytes(b"II*\x00")
    with pytest.raises(UserError) as refused:
        folder_source(tmp_path)
    assert str(refused.value) == (
        "No images (.jpg, .jpeg, .jpe, .jfif, .png, .gif, .bmp, .webp) under "
        f"{str(tmp_path)!r}. Skipped 2 file(s) that are not JPEG, PNG, GIF, BMP or WebP images "
        "(2 .tiff), e.g. "
        f"{str(tmp_path / 'a/scan.tiff')!r}."
    )


def _image_hashes(ds):
    return [hashlib.sha1(image.tobytes()).hexdigest() for batch, _ in ds for image in batch.numpy()]


@pytest.mark.slow
def test_splits_hold_the_same_images_on_every_pass(fashion_mnist, tmp_path):
    """Splits pick examples by their position in the source, so its order must hold on every
    pass: a freed order (tf.data's global `deterministic=False`) gave every pass over the data
    another split, and the test part of an image folder shared images with training."""
    for name in ("a", "bb", "ccc"):  # _write_images seeds by the path's length
        _write_images(tmp_path / name, 30, 24, "RGB")
    spec = PipelineSpec(image_size=(16, 16), channels=3, batch_size=4)
    folder = DataSpec(image_folder=str(tmp_path), validation_fraction=0.2, test_fraction=0.2)
    splits = []
    for _ in range(2):
        datasets = make_datasets(folder, spec)
        train, validation, test = (
            _image_hashes(ds) for ds in (datasets.train, datasets.validation, datasets.test)
        )
        assert (len(validation), len(test)) == (18, 18) and len(train) == 52  # 54, whole batches
        shared = len(train) + len(validation) + len(test) - len({*train, *validation, *test})
        assert shared == 0, f"{shared} images in two splits"
        splits.append((set(train), set(validation), set(test)))
    assert splits[0][1:] == splits[1][1:]
    assert len(splits[0][0] & splits[1][0]) >= 50  # the same 54, less 2 dropped at random

    small = DataSpec(train_examples=2048, validation_fraction=0.02)
    plain = PipelineSpec(image_size=(28, 28), channels=1, batch_size=64)
    first, second = (set(_image_hashes(make_datasets(small, plain).validation)) for _ in range(2))
    assert len(first) == 1200 and first == second


def test_train_examples_is_a_seeded_sample_of_every_class(tmp_path):
    """An image folder lists its images class by class: the first 24 were all of one class."""
    for name in ("a", "bb", "ccc"):
        _write_images(tmp_path / name, 30, 8, "RGB")
    spec = PipelineSpec(image_size=(8, 8), channels=3, batch_size=8, one_hot=False)

    def sample(seed):
        data = DataSpec(image_folder=str(tmp_path), train_examples=24, seed=seed)
        batches = [
            (images.numpy(), labels.numpy()) for images, labels in make_datasets(data, spec).train
        ]
        labels = np.concatenate([labels for _, labels in batches])
        return {hashlib.sha1(i.tobytes()).hexdigest() for b, _ in batches for i in b}, labels

    images, labels = sample(1)
    assert len(images) == 24 and set(labels) == {0, 1, 2}
    assert sample(1)[0] == images and sample(2)[0] != images


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_folder": "/nonexistent/folder"}, "does not exist"),
        ({"dataset": "no_such_dataset_xyz"}, "Unknown TFDS dataset 'no_such_dataset_xyz'"),
        # a traceback (AssertionError) and a line ending in "whose name closely match:"
        (
            {"dataset": "fashion_mnist:9.9.9"},
            r"^TFDS dataset 'fashion_mnist:9\.9\.9': Dataset fashion_mnist cannot be loaded at "
            r"version 9\.9\.9, only: 3\.0\.1\.$",
        ),
        (
            {"dataset": "mnist_corrupted/xyz"},
            r"^TFDS dataset 'mnist_corrupted/xyz': BuilderConfig xyz not found with version None; "
            r"its configs: identity, shot_noise, .*, \.\.\. \(\d+ in all\)\.$",
        ),
        ({"validation_fraction": 1.5}, "validation_fraction"),  # refused by DataSpec itself
    ],
)
def test_source_errors(values, message):
    with pytest.raises(UserError, match=message):
        make_datasets(
            DataSpec(**values), PipelineSpec(image_size=(32, 32), channels=1, batch_size=8)
        )


def test_decode_handles_formats_and_channels():
    rgba = np.full((5, 7, 4), 200, np.uint8)
    gray = np.full((5, 7, 1), 100, np.uint8)
    assert decode(tf.io.encode_png(rgba), 1).shape == (5, 7, 1)
    assert decode(tf.io.encode_png(gray), 3).shape == (5, 7, 3)
    assert int(decode(tf.io.encode_png(gray), 3)[0, 0, 2]) == 100
    out = preprocess(decode(tf.io.encode_png(gray), 1), (10, 14), 1)
    assert out.shape == (10, 14, 1) and abs(float(out[0, 0, 0]) - 100 / 255) < 1e-6


def test_webp_decodes_and_transparent_or_animated_webp_fails_cleanly(tmp_path):
    """RGB WebP decodes and image folders read `.webp`. TensorFlow 2.21 decodes a WebP with
    transparency or animation only at the file's own channels, and on an animated one that
    corrupts the heap (the process aborts): `decode` must refuse both with an error, which
    is checked in a child process so that an abort fails this test, not the whole run."""
    import io
    import subprocess
    import sys

    from PIL import Image

    def webp(mode, **options):
        buffer = io.BytesIO()
        Image.fromarray(np.full((5, 7, 4), 200, np.uint8), "RGBA").convert(mode).save(
            buffer, "WEBP", **options
        )
        return buffer.getvalue()

    for lossless in (False, True):
        image = decode(webp("RGB", lossless=lossless), 3).numpy()
        assert image.shape == (5, 7, 3) and abs(int(image[2, 3, 0]) - 200) <= 8
        for label in ("a", "b"):
            (tmp_path / label).mkdir(exist_ok=True)
            (tmp_path / label / f"{lossless}.webp").write_bytes(webp("RGB", lossless=lossless))
    assert folder_source(tmp_path).num_train == 4

    refused = {
        "alpha": webp("RGBA"),
        "lossless-alpha": webp("RGBA", lossless=True),
        "animated": webp("RGB", save_all=True, append_images=[Image.new("RGB", (7, 5))]),
    }
    for name, data in refused.items():
        (tmp_path / f"{name}.webp").write_bytes(data)
    script = (
        "import sys, tensorflow as tf\n"
        "from tf_alexnet.preprocess import decode\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        decode(open(path, 'rb').read(), 3)\n"
        "        print(path, 'decoded')\n"
        "    except tf.errors.InvalidArgumentError:\n"
        "        print(path, 'refused')\n"
    )
    paths = [str(tmp_path / f"{name}.webp") for name in refused]
    child = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == [word for path in paths for word in (path, "refused")]
    assert unreadable_images(paths[:1]) == [
        f"{paths[0]} (a WebP image with transparency or animation, which TensorFlow does not "
        "decode)"
    ]


def test_image_folder_layout_mistakes_are_refused_or_noted(tmp_path, capsys):
    """An empty class folder silently became a class; `train/` alone read as one class
    named 'train'; a `val/` folder and loose images were ignored without a word."""
    _write_images(tmp_path / "x" / "cat", 3, 20, "RGB")
    _write_images(tmp_path / "x" / "dog", 3, 20, "RGB")
    (tmp_path / "x" / "fox").mkdir()
    (tmp_path / "x" / "owl").mkdir()
    (tmp_path / "x" / "owl" / "notes.txt").write_text("no images")
    with pytest.raises(UserError) as refused:
        folder_source(tmp_path / "x")
    assert str(refused.value) == (
        f"The class folder(s) 'fox', 'owl' in {str(tmp_path / 'x')!r} hold no JPEG, PNG, GIF, "
        "BMP or WebP images: every class folder is a class. Add images or remove the folder(s)."
    )

    _write_images(tmp_path / "only" / "train" / "cat", 3, 20, "RGB")
    _write_images(tmp_path / "only" / "train" / "dog", 3, 20, "RGB")
    with pytest.raises(UserError) as refused:
        folder_source(tmp_path / "only")
    assert str(refused.value) == (
        f"The image folder {str(tmp_path / 'only')!r} has train/ but no test/: the train/test "
        "layout needs both (DIR/train/<class>/ and DIR/test/<class>/). For a folder of classes "
        f"with a seeded test split, pass --image-folder {str(tmp_path / 'only' / 'train')!r}."
    )
    assert folder_source(tmp_path / "only" / "train").class_names == ("cat", "dog")
    # A class that happens to be named "train" is still a class.
    _write_images(tmp_path / "vehicles" / "train", 2, 20, "RGB")
    _write_images(tmp_path / "vehicles" / "bus", 2, 20, "RGB")
    assert folder_source(tmp_path / "vehicles").class_names == ("bus", "train")
    capsys.readouterr()

    root = tmp_path / "ttv"
    for split in ("train", "test", "val"):
        _write_images(root / split / "cat", 2, 20, "RGB")
        _write_images(root / split / "dog", 2, 20, "RGB")
    _write_images(root, 2, 20, "RGB")  # 0.png, 1.jpg beside the splits
    source = folder_source(root)
    assert (source.num_train, source.num_test) == (4, 4)
    assert capsys.readouterr().out == (
        f"Note: {str(root / 'val')!r} is not read: with train/ and test/, the validation split "
        "comes out of train/ (--validation-fraction).\n"
        f"Note: 2 image(s) directly in {str(root)!r} are not read, e.g. {str(root / '0.png')!r}: "
        "images go in a subfolder per class.\n"
    )
    assert folder_source(tmp_path / "only" / "train") and capsys.readouterr().out == ""


def _fashion_mnist_hosts_offline(monkeypatch):
    """Fashion-MNIST's download hosts, with no proxy set; skips the test on a machine that
    resolves them (TFDS would download the files there)."""
    import tensorflow_datasets as tfds

    from tf_alexnet.sources import PROXY_VARIABLES

    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    hosts = {url.split("/")[2] for url in tfds.builder("fashion_mnist").url_infos}
    online = []
    for host in hosts:
        with contextlib.suppress(OSError):
            online.append(socket.getaddrinfo(host, None))
    if online:
        pytest.skip(f"this machine resolves {sorted(hosts)}: TFDS would download the files")
    return hosts


def test_tfds_offline_without_the_original_files_says_so_at_once(tmp_path, monkeypatch):
    """Offline, TFDS retried its downloads for 3.5 minutes before the same advice."""
    from tf_alexnet.sources import tfds_source

    monkeypatch.delenv("TF_ALEXNET_MANUAL_DIR", raising=False)
    hosts = _fashion_mnist_hosts_offline(monkeypatch)
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        tfds_source("fashion_mnist", data_dir=str(tmp_path / "tfds"))
    assert time.monotonic() - start < 30
    message = str(caught.value)
    assert message.startswith("Could not prepare TFDS dataset 'fashion_mnist': its download host")
    assert all(host in message for host in hosts)
    assert (
        "cannot be resolved (no internet?). Put the original files in a folder and pass " in message
    )
    assert "--manual-dir or set $TF_ALEXNET_MANUAL_DIR." in message


def test_tfds_offline_with_a_manual_folder_that_lacks_files_says_which_at_once(
    tmp_path, monkeypatch
):
    """A manual folder holding some of the files: TFDS retried downloading the others for 3.5
    minutes. A file given as the folder was said not to exist."""
    from tf_alexnet.sources import tfds_source

    hosts = _fashion_mnist_hosts_offline(monkeypatch)
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (manual / name).symlink_to(FASHION_MNIST / name)
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        tfds_source("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    assert time.monotonic() - start < 30
    assert str(caught.value) == (
        f"The manual-download folder {str(manual)!r} lacks t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz of TFDS dataset 'fashion_mnist', and its download host(s) "
        f"{', '.join(sorted(hosts))} cannot be resolved (no internet?). Put the original files "
        "there."
    )
    a_file = manual / "train-images-idx3-ubyte.gz"
    with pytest.raises(UserError, match="is not a folder"):
        tfds_source("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(a_file))


def test_the_offline_check_leaves_names_to_a_proxy(monkeypatch):
    from tf_alexnet.sources import PROXY_VARIABLES, _unresolved_hosts

    urls = ["https://no-such-host.invalid/a.gz", "http://no-such-host.invalid/b.gz", "file:///x"]
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert _unresolved_hosts(urls) == ["no-such-host.invalid"]  # .invalid never resolves
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert _unresolved_hosts(urls) == []  # the proxy resolves names, not this machine


def test_an_empty_image_folder_is_refused_not_read_as_none():
    """`--image-folder=` (or `"image_folder": ""`) read as no folder and trained on
    Fashion-MNIST without a word."""
    with pytest.raises(UserError) as refused:
        DataSpec(image_folder="")
    assert str(refused.value) == (
        "`image_folder` should be a folder with one subfolder of images per class, not an empty "
        "string (null, the default, reads `dataset`). Received: image_folder=''"
    )
    assert DataSpec(image_folder=" ").image_folder == " "  # a name: "does not exist" later


def test_a_seed_numpy_refuses_is_refused_by_the_spec():
    """`--seed 4294967296` passed and numpy refused it later, without naming the setting."""
    with pytest.raises(UserError) as refused:
        DataSpec(seed=2**32)
    assert str(refused.value) == "`seed` should be in [0, 4294967295]. Received: seed=4294967296"
    assert DataSpec(seed=2**32 - 1).seed == 2**32 - 1
    np.random.default_rng(2**32 - 1)  # the largest seed is one numpy takes


def test_linked_folders_back_into_the_dataset_are_skipped_and_named(tmp_path):
    """`ln -s .. data/cat/up` labelled every dog image cat too (48 images instead of 40): the
    "each real folder once" guard only ended a link to the link's own folder."""
    data = tmp_path / "data"
    _write_images(data / "cat", 2, 20, "RGB")
    _write_images(data / "dog", 3, 20, "RGB")
    _write_images(tmp_path / "elsewhere", 1, 20, "RGB")
    (data / "cat" / "up").symlink_to("..")  # the dataset itself
    (data / "cat" / "above").symlink_to(tmp_path)  # a folder above it
    (data / "cat" / "dogs").symlink_to(data / "dog")  # another class
    (data / "cat" / "self").symlink_to(".")  # its own folder: ends, as before
    (data / "dog" / "outside").symlink_to(tmp_path / "elsewhere")  # still read
    source = folder_source(data)
    assert source.num_train == 2 + 3 + 1
    links = [str(data / "cat" / name) + os.sep for name in ("above", "dogs", "up")]
    assert source.skipped == tuple(links)
    assert skipped_notice([*source.skipped, "x/a/1.tif"]) == (
        "Skipped 1 file(s) that are not JPEG, PNG, GIF, BMP or WebP images (1 .tif), e.g. "
        "'x/a/1.tif'. Skipped 3 linked folder(s) that lead back into the image folder (to it, "
        "above it, or to another class's or split's images, which would be read again under "
        f"the wrong class), e.g. {str(data / 'cat' / 'above')!r}."
    )
    # Without a dataset folder (predict's folders), the folder itself is the limit.
    images, others = image_files(data / "cat")
    assert len(images) == 2 + 3 + 1 and others == links[:1] + links[2:]

    # train/ and test/: a link from a training class into the test split leaks test images.
    split = tmp_path / "split"
    for part in ("train", "test"):
        _write_images(split / part / "a", 2, 20, "RGB")
        _write_images(split / part / "b", 2, 20, "RGB")
    (split / "train" / "a" / "peek").symlink_to(split / "test" / "a")
    source = folder_source(split)
    assert (source.num_train, source.num_test) == (4, 4)
    assert source.skipped == (str(split / "train" / "a" / "peek") + os.sep,)


def test_a_folder_linked_within_the_folder_is_read_under_its_own_path(tmp_path):
    """`predict photos/` named a class's images after a link to it (`b/other/1.png` for
    `a/1.png`) when the walk met the link first; here it meets one of the two links first,
    whichever order the folder lists in."""
    photos = tmp_path / "photos"
    _write_images(photos / "a", 2, 20, "RGB")
    _write_images(photos / "b", 1, 20, "RGB")
    _write_images(photos / ".hidden" / "c", 1, 20, "RGB")
    (photos / "a" / "to_b").symlink_to(photos / "b")
    (photos / "b" / "to_a").symlink_to(photos / "a")
    (photos / "b" / "to_hidden").symlink_to(photos / ".hidden" / "c")  # read only this way
    (photos / "b" / "loop").symlink_to(photos)
    images, others = image_files(photos)
    names = ["a/0.png", "a/1.jpg", "b/0.png", "b/to_hidden/0.png"]
    assert images == [str(photos / name) for name in names] and others == []
    # As a class folder of a dataset: a link to another class is still skipped and named.
    images, others = image_files(photos / "b", photos)
    assert images == [str(photos / "b" / "0.png")]
    assert others == [str(photos / "b" / name) + os.sep for name in ("loop", "to_a", "to_hidden")]


BREAKS_A_LINE = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", [*BREAKS_A_LINE, "\t", "\x7f"])
def test_class_folder_names_that_break_the_class_names_file_are_refused(tmp_path, char):
    """A class folder named `line1<newline>line2` trained and exported; the export's
    `class_names.txt` (one name a line) then read back as 4 names for 3 classes."""
    assert char in BREAKS_A_LINE or char.splitlines() == [char]  # the rest: control characters
    name = f"line1{char}line2"
    for label in ("cat", name):
        _write_images(tmp_path / label, 1, 20, "RGB")
    with pytest.raises(UserError) as refused:
        folder_source(tmp_path)
    assert str(refused.value) == (
        f"The class folder {name!r} in {str(tmp_path)!r} has a line break or another control "
        "character in its name: class names are written one a line beside an exported model. "
        "Rename the folder."
    )
    assert "\n" not in str(refused.value)


def test_a_class_folder_name_that_is_not_utf8_is_refused(tmp_path):
    """Its name (decoded with surrogates) could not be written to the UTF-8 class names file."""
    try:
        os.mkdir(os.fsencode(tmp_path) + b"/caf\xe9")
    except OSError as err:  # a file system that takes UTF-8 names only
        pytest.skip(f"this file system refuses a name that is not UTF-8: {err}")
    _write_images(tmp_path / "cat", 1, 20, "RGB")
    with pytest.raises(UserError, match=r"^The class folder 'caf\\udce9' in .* has a byte that"):
        folder_source(tmp_path)


UNREADABLE = """
import sys
from tf_alexnet.sources import folder_source
for folder in sys.argv[1:]:
    try:
        folder_source(folder)
        print("read")
    except Exception as err:
        print(type(err).__name__, err)
"""


def test_an_unreadable_folder_is_named_not_called_empty(tmp_path):
    """`chmod 000 data/dog` said "The class folder(s) 'dog' ... hold no ... images" (os.walk
    passes over the error); an unreadable image folder gave a PermissionError traceback."""
    _write_images(tmp_path / "data" / "cat", 1, 20, "RGB")
    _write_images(tmp_path / "data" / "dog", 1, 20, "RGB")
    _write_images(tmp_path / "top" / "cat", 1, 20, "RGB")
    _write_images(tmp_path / "top" / "dog", 1, 20, "RGB")
    locked = [tmp_path / "data" / "dog", tmp_path / "top"]
    command = [sys.executable, "-c", UNREADABLE, str(tmp_path / "data"), str(tmp_path / "top")]
    if os.geteuid() == 0:  # root reads anything: in a user namespace, permissions apply
        unshare = shutil.which("unshare")
        if not unshare or subprocess.run([unshare, "-U", "true"], timeout=30).returncode:
            pytest.skip("root reads folders whatever their permissions, and `unshare -U` fails")
        command = [unshare, "-U", *command]
    for folder in locked:
        folder.chmod(0)
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        for folder in locked:
            folder.chmod(0o755)
    assert child.returncode == 0, child.stderr[-2000:]
    if os.geteuid() == 0 and child.stdout.splitlines()[0] == "read":
        pytest.skip("the folder is still readable after chmod 000 (root without a namespace)")
    assert child.stdout.splitlines() == [
        f"UserError Permission denied: {str(folder)!r}. The image folder's folders must be "
        "readable to list the images."
        for folder in locked
    ]


@pytest.mark.slow
def test_two_processes_preparing_one_tfds_dataset_take_turns(tmp_path):
    """The workers of a multi-worker run on an empty data folder both prepared Fashion-MNIST,
    and the second to finish failed: "Cannot rename .../incomplete.ZB1GNC_3.0.1. Destination
    .../3.0.1 already exists". Here both wait while the test holds the lock, then one prepares
    and the other reads what it wrote."""
    import fcntl

    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the original Fashion-MNIST files are not in {FASHION_MNIST}")
    data_dir = tmp_path / "tfds"
    (data_dir / "fashion_mnist").mkdir(parents=True)
    script = (
        "import sys\n"
        "from tf_alexnet.sources import tfds_source\n"
        "source = tfds_source('fashion_mnist', sys.argv[1], sys.argv[2])\n"
        "print('ok', source.num_train, source.num_test, flush=True)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    files = contextlib.ExitStack()
    with files, open(data_dir / "fashion_mnist" / ".tf_alexnet-prepare.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(data_dir), str(FASHION_MNIST)],
                stdout=files.enter_context(open(log, "w")),  # noqa: SIM115 (ExitStack closes it)
                stderr=subprocess.STDOUT,
                env=env,
            )
            for log in logs
        ]
        try:
            deadline = time.monotonic() + 240
            while not all("Waiting for another process" in log.read_text() for log in logs):
                ended = [child.poll() for child in children]
                assert ended == [None, None], [log.read_text()[-2000:] for log in logs]
                assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
                time.sleep(0.2)
        except BaseException:
            for child in children:
                child.kill()
            raise
    codes = [child.wait(timeout=600) for child in children]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    assert all("ok 60000 10000\n" in output for output in outputs), outputs
    assert sorted(p.name for p in (data_dir / "fashion_mnist").iterdir()) == [
        ".tf_alexnet-prepare.lock",
        "3.0.1",
    ]
