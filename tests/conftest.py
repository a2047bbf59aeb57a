"""Shared fixtures: two logical CPU devices, the real Fashion-MNIST files, tiny configs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

# Two logical CPUs before TensorFlow initializes, so MirroredStrategy has two replicas.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

REPO = pathlib.Path(__file__).resolve().parent.parent
FASHION_MNIST = pathlib.Path(
    os.environ.get("TF_ALEXNET_TEST_MANUAL_DIR", REPO.parent / "shared" / "data" / "fashion-mnist")
)
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The compose stack test runs last: `.ci/run` builds its images in the background
    meanwhile (scripts/compose_smoke.py --prepare), so it waits for as little as it can."""
    items.sort(key=lambda item: item.get_closest_marker("docker") is not None)


@pytest.fixture(scope="session")
def fashion_mnist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables pointing TFDS at the real Fashion-MNIST files (built once)."""
    if not all((FASHION_MNIST / name).is_file() for name in FASHION_MNIST_FILES):
        pytest.skip(f"the original Fashion-MNIST files are not in {FASHION_MNIST}")
    env = {
        "TF_ALEXNET_DATA_DIR": str(tmp_path_factory.mktemp("tfds")),
        "TF_ALEXNET_MANUAL_DIR": str(FASHION_MNIST),
    }
    os.environ.update(env)
    from tf_alexnet.sources import tfds_source

    tfds_source("fashion_mnist")  # prepare once for the whole session
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `tf-alexnet ARGS` in a fresh process; `serve` on a free port unless ARGS name one
    (the default, 8000, may be a user's own `docker compose up`: such tests failed beside it)."""
    if args and args[0] == "serve" and not any(arg.startswith("--port") for arg in args):
        args = (*args, "--port", str(free_port()))
    return subprocess.run(
        [sys.executable, "-m", "tf_alexnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def trained_run(
    fashion_mnist: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> pathlib.Path:
    """A real run: the mini variant trained briefly on Fashion-MNIST at 28 px."""
    from tf_alexnet import config as config_lib
    from tf_alexnet.train import train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    config = config_lib.from_dict(TINY_TRAINING)
    train(config, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def model_base(
    trained_run: pathlib.Path, test_images: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> pathlib.Path:
    """A TF Serving model base path holding `alexnet/1`, exported from `trained_run`."""
    from tf_alexnet.export import export

    base = tmp_path_factory.mktemp("models")
    export(trained_run, base, sample_images=test_images[:2])
    return base


@pytest.fixture(scope="session")
def test_images(fashion_mnist: dict[str, str]) -> list[bytes]:
    """The first 16 Fashion-MNIST test images as PNG files' bytes."""
    from tf_alexnet.sources import sample_images
    from tf_alexnet.specs import DataSpec

    return sample_images(DataSpec(), 16)


def write_image_folder(
    root: pathlib.Path, counts: dict[str, int], size: tuple[int, int] = (12, 12)
) -> pathlib.Path:
    """An image folder of random RGB PNGs, classes `a` and `b`: `counts` maps a split's
    subfolder ("" for none) to images per class. Seeded, drawn split by split, class by class."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                (root / split / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def json_log_lines(path: pathlib.Path) -> list[dict[str, Any]]:
    """The JSON lines of a server's log so far; whole lines only (a running server may be
    writing the last one: reading '{"time": ' failed a test)."""
    whole = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in whole if line.startswith("{")]


def flat_png(width: int, height: int) -> bytes:
    """A valid gray PNG of `width`x`height` black pixels, compressed in blocks of rows: 15000x14000
    (915 KB) in half a second, 1x25,000,000 without a loop over its rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" * (width + 1)  # the filter byte, then the row
    per_block = max(1, 8_000_000 // len(row))
    packer = zlib.compressobj(1)
    rows = b"".join(
        packer.compress(row * min(per_block, height - start))
        for start in range(0, height, per_block)
    )
    header = struct.pack(">II", width, height) + b"\x08\x00\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", rows + packer.flush())
        + chunk(b"IEND", b"")
    )


Inode = tuple[int, int]
SyncEvent = tuple[str, Inode, str] | tuple[str, str, str]


@pytest.fixture
def disk_syncs(monkeypatch: pytest.MonkeyPatch) -> list[SyncEvent]:
    """The real `os.fsync`, `os.rename` and `os.replace` calls, in order, as they ran:
    `("fsync", inode, path)` and `("rename" | "replace", source, target)`. A power loss cannot be
    tested, but what was synced before a rename and after it can. Synced files are told by inode
    (see `synced_around`), as the rename changes their paths."""
    events: list[SyncEvent] = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def recorded_fsync(descriptor: int) -> None:
        fsync(descriptor)
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        events.append(("fsync", inode(descriptor), path))

    def recorded(kind: str, move: Any) -> Any:
        def recorded_move(source: Any, target: Any, **kwargs: Any) -> None:
            move(source, target, **kwargs)
            events.append((kind, os.fspath(source), os.fspath(target)))

        return recorded_move

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "rename", recorded("rename", rename))
    monkeypatch.setattr(os, "replace", recorded("replace", replace))
    return events


def inode(path: int | str | os.PathLike[str]) -> Inode:
    """(device, inode) of a path or an open descriptor."""
    status = os.fstat(path) if isinstance(path, int) else os.stat(path)
    return status.st_dev, status.st_ino


def synced_around(
    events: list[SyncEvent], target: str | os.PathLike[str]
) -> tuple[set[Any], set[Any]]:
    """The inodes `disk_syncs` saw synced before the one rename to `target`, and after it."""
    [moved] = [
        i
        for i, (kind, _, to) in enumerate(events)
        if kind in ("rename", "replace") and to == os.fspath(target)
    ]
    before = {event[1] for event in events[:moved] if event[0] == "fsync"}
    after = {event[1] for event in events[moved + 1 :] if event[0] == "fsync"}
    return before, after


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """`tf-alexnet serve` in a subprocess on a loopback port, ready when entered (`env` adds
    to its environment; `stderr`, a file to keep its log in)."""

    def __init__(
        self,
        model_base: pathlib.Path,
        env: dict[str, str] | None = None,
        stderr: pathlib.Path | None = None,
    ) -> None:
        self.env = env or {}
        self.stderr = stderr
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [
            sys.executable, "-m", "tf_alexnet.cli", "serve",
            "--port", str(self.port), "--model-base-path", str(model_base),
        ]  # fmt: skip

    def __enter__(self) -> LiveServer:
        import time

        import httpx

        self._log = self.stderr.open("wb") if self.stderr else None
        self.process = subprocess.Popen(
            self._command,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env},
            stdout=subprocess.DEVNULL,
            stderr=self._log or subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.__exit__()
        raise RuntimeError("the server did not become ready")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self._log:
            self._log.close()


TINY_TRAINING = {
    "variant": "mini",
    "image_size": 28,
    "train_examples": 2048,
    "validation_fraction": 0.02,
    "batch_size": 64,
    "epochs": 2,
    "learning_rate": 0.01,
    "momentum": 0.9,
    "shuffle_buffer": 2048,
}
"""A real but short training: the mini variant at 28 px, 64 steps (about 20 s here)."""
