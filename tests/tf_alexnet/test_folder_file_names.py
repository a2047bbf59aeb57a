"""File names that are not UTF-8 (a Latin-1 `caf\\xe9.png` unpacked from an old archive):
Python holds them with surrogates, which a string tensor refuses, and `train` stopped with
"tf-alexnet: error: Error converting unicode string while converting Python sequence to
Tensor.", naming no file."""

import os

import numpy as np
import tensorflow as tf

from tests.conftest import write_image_folder
from tf_alexnet.cli import main
from tf_alexnet.sources import folder_source


def test_an_image_whose_name_is_not_utf8_is_read(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", {"": 3})
    latin1 = os.path.join(os.fsencode(data / "a"), b"caf\xe9.png")
    white = np.full((12, 12, 3), 255, np.uint8)
    with open(latin1, "wb") as file:
        file.write(tf.io.encode_png(white).numpy())

    source = folder_source(data)
    assert source.num_train == 7 and os.fsdecode(latin1) in source.files
    images = [image.numpy() for image, _ in source.train]
    assert len(images) == 7 and any((image == 255).all() for image in images)

    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    assert main([*train, "--batch-size", "2", "--run-dir", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().err == ""


def test_jpegs_saved_as_jfif_or_jpe_are_read(tmp_path):
    """Browsers and Windows save some JPEGs as `.jfif` or `.jpe`: they were skipped as "not
    JPEG, PNG, GIF, BMP or WebP images", and a folder of them held "No images"."""
    rng = np.random.default_rng(1)
    for name, suffix in (("a", ".jfif"), ("b", ".JPE")):
        (tmp_path / name).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (tmp_path / name / f"{i}{suffix}").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    source = folder_source(tmp_path)
    assert source.num_train == 4 and source.class_names == ("a", "b")
    assert sorted(label.numpy().item() for _, label in source.train) == [0, 0, 1, 1]
