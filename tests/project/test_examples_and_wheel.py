"""The transfer-learning example, and the wheel installed into a fresh virtual environment."""

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import tf_alexnet
from tests.conftest import REPO
from tf_alexnet import contract
from tf_alexnet.export import export


def _shapes_folder(root, count=60, size=36):
    """Two classes another model never saw: bright discs and bright squares on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for label in ("disc", "square"):
        (root / label).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            cy, cx, r = [*rng.integers(10, size - 10, 2).tolist(), int(rng.integers(5, 9))]
            if label == "disc":
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            else:
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            image[mask] = 230
            tf.io.write_file(str(root / label / f"{i}.png"), tf.io.encode_png(image))


def _transfer_learning(weights, folder, *flags):
    """examples/transfer_learning.py run as a user runs it; it must succeed."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "transfer_learning.py"),
            "--weights",
            str(weights),
            "--image-folder",
            str(folder),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_transfer_learning_example(trained_run, tmp_path):
    _shapes_folder(tmp_path / "shapes")
    result = _transfer_learning(
        trained_run / "best.keras", tmp_path / "shapes", "--batch-size", "16"
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("test accuracy"))
    assert "on 24 images (classes: disc, square)" in line
    assert "shuffle" not in result.stderr  # fit is told the dataset shuffles itself
    # Frozen Fashion-MNIST features + a new head tell discs from squares better than chance.
    assert float(line.split()[2]) >= 0.6


@pytest.mark.parametrize("width", [0.5, 0.3, 0.1])
def test_transfer_learning_example_takes_a_narrower_model(width, tmp_path):
    """A model trained with `--width`: counts round to multiples of 8 (0.3 gives mini
    8-16-32-32-16 filters, no single ratio of counts), and at least 8 (0.1: all 8)."""
    from tf_alexnet import AlexNet

    AlexNet(input_shape=(28, 28, 1), variant="mini", width=width).save(tmp_path / "narrow.keras")
    _shapes_folder(tmp_path / "shapes", count=12)
    result = _transfer_learning(
        tmp_path / "narrow.keras", tmp_path / "shapes", "--epochs", "1", "--batch-size", "8"
    )
    assert "(classes: disc, square)" in result.stdout


def _tracked_copy(source):
    """A copy of the tracked sources to build from: a build writes build/ and *.egg-info
    beside them, and only what is committed may go into a distribution."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    return source


def test_the_wheel_holds_what_a_user_needs_and_nothing_else(tmp_path):
    """Both packages with their data files, the licence, the commands, and a long description
    whose links work on PyPI; no tests, benchmarks, runs or caches."""
    source = _tracked_copy(tmp_path / "source")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(tmp_path / "dist"), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("tf_alexnet-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert {name.split("/")[0] for name in names} == {"tf_alexnet", "tf_alexnet_serving", info}
    for data in (
        "tf_alexnet/py.typed",
        "tf_alexnet_serving/py.typed",
        "tf_alexnet_serving/page.html",
    ):
        assert data in names, data
    for package in ("tf_alexnet", "serving/tf_alexnet_serving"):
        for module in (REPO / package).glob("*.py"):  # every module, none left behind
            assert f"{package.removeprefix('serving/')}/{module.name}" in names, module
    assert f"{info}/licenses/LICENSE" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert f"Version: {tf_alexnet.__version__}\n" in metadata
    assert "License-Expression: Apache-2.0" in metadata
    assert "tf-alexnet = tf_alexnet.cli:main" in entry_points
    assert "serve = tf_alexnet_serving.cli:serve" in entry_points
    description = metadata.split("\n\n", 1)[1]
    assert description.startswith("# tf_alexnet\n")
    assert not re.findall(r"\]\((?![a-z]+:)", description), "a relative link, dead on PyPI"


@pytest.mark.slow
def test_wheel_installs_and_works_outside_the_repository(trained_run, test_images, tmp_path):
    exported = export(trained_run, tmp_path / "models", sample_images=test_images[:2]).path
    source = _tracked_copy(tmp_path / "source")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (tmp_path / "dist").glob("tf_alexnet-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Not the repository's sources on PYTHONPATH (as tests are often run): they would be
    # imported instead of the installed wheel.
    outside = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=outside,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "use_it.py").write_text(
        "import numpy as np, keras, tf_alexnet\n"
        "from tf_alexnet import AlexNet, load_exported\n"
        "assert 'site-packages' in tf_alexnet.__file__, tf_alexnet.__file__\n"
        "model = AlexNet(input_shape=(28, 28, 1), variant='mini')\n"
        "model.compile('sgd', keras.losses.SparseCategoricalCrossentropy(from_logits=True))\n"
        "model.fit(np.random.rand(8, 28, 28, 1), np.arange(8) % 10, epochs=1, verbose=0)\n"
        f"layer = load_exported({str(exported)!r})\n"
        "print(layer(np.zeros((1, 28, 28, 1), 'float32'))['class_name'].numpy()[0].decode())\n"
    )
    result = subprocess.run(
        [str(python), "use_it.py"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=outside,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] in contract.CLASS_NAMES
    cli = subprocess.run(
        [str(env_dir / "bin" / "tf-alexnet"), "summary"],
        capture_output=True,
        text=True,
        timeout=300,
        env=outside,
        cwd=project,
    )
    assert "Total parameters: 46,764,746" in cli.stdout
