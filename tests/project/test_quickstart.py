"""README command 1: the example images are real test images; the quickstart serves one."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import FASHION_MNIST, REPO, free_port
from tf_alexnet import contract

IMAGES = REPO / "examples" / "images"
# file -> index in the Fashion-MNIST test set (examples/images/README.md)
TEST_SET_INDEX = {
    "t-shirt.png": 19,
    "trouser.png": 2,
    "pullover.png": 1,
    "dress.png": 13,
    "coat.png": 6,
    "sandal.png": 8,
    "shirt.png": 4,
    "sneaker.png": 9,
    "bag.png": 18,
    "ankle-boot.png": 0,
}


def test_example_images_are_the_real_test_images():
    images_file = FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    if not images_file.is_file():
        pytest.skip(f"the original Fashion-MNIST files are not in {FASHION_MNIST}")
    from PIL import Image

    with gzip.open(images_file) as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    assert sorted(p.name for p in IMAGES.glob("*.png")) == sorted(TEST_SET_INDEX)
    for name, index in TEST_SET_INDEX.items():
        pixels = np.asarray(Image.open(IMAGES / name))
        np.testing.assert_array_equal(pixels, images[index], err_msg=name)
        slug = contract.CLASS_NAMES[labels[index]].lower().replace(" ", "-")
        assert name.removesuffix(".png") in slug, (name, slug)
    assert "MIT License" in (IMAGES / "LICENSE").read_text()


def _quickstart(tmp_path, fashion_mnist, port):
    env = {
        **os.environ,
        **fashion_mnist,
        "VENV": sys.prefix,  # this environment, already installed
        "QUICKSTART_INSTALL": "0",
        "RUN_DIR": str(tmp_path / "run"),
        "MODEL_BASE_PATH": str(tmp_path / "models"),
        "PORT": str(port),
        "QUICKSTART_SERVE": "once",
        "QUICKSTART_TRAIN_FLAGS": "--train-examples 512 --epochs 1 --batch-size 64",
    }
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI is quiet by itself
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "quickstart.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, time.monotonic() - start


@pytest.mark.slow
def test_quickstart_trains_exports_serves_and_predicts(fashion_mnist, tmp_path):
    """The whole script on a tiny run (one epoch of 512 images), then again: nothing redone."""
    port = free_port()
    first, first_seconds = _quickstart(tmp_path, fashion_mnist, port)
    out = first.stdout
    assert "Done: best val_accuracy" in out
    assert "on 10,000 images" in out  # the test-set report
    assert "Exported version 1 to" in out
    line = next(line for line in out.splitlines() if line.startswith("examples/images/shirt.png"))
    assert line.split(" -> ")[1] in contract.CLASS_NAMES  # a real answer from the server
    assert '"version": 1' in out
    assert f"curl -F file=@examples/images/sneaker.png 'http://127.0.0.1:{port}/predict" in out
    assert (REPO / "examples" / "images" / "sneaker.png").is_file()
    # It ends saying so: the server's "tf-alexnet: terminated" was the last line, like an error.
    assert out.rstrip().endswith("Done.")
    # What it trains is told, and not as the preset's 2 epochs when the flags say 1.
    assert "Training the quick preset with --train-examples 512 --epochs 1 " in out
    assert "2 epochs" not in out
    # Quiet: none of TensorFlow's C++ start-up lines.
    for noise in ("cuInit", "Could not find cuda drivers", "absl::InitializeLog", "oneDNN"):
        assert noise not in first.stderr, first.stderr[-2000:]

    again, again_seconds = _quickstart(tmp_path, fashion_mnist, port)
    assert "Already trained" in again.stdout and "Training mini" not in again.stdout
    assert "Exported version 1 to" in again.stdout
    assert sorted(p.name for p in (tmp_path / "models" / "alexnet").iterdir()) == ["1"]
    assert again_seconds < first_seconds
