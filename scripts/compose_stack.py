"""The compose smoke test's stack (scripts/compose_smoke.py, steps 2-6): the compose project,
its containers' states, real Fashion-MNIST test images, and a client polling `/predict`."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pathlib
import socket
import threading
import time
from typing import Any

from compose_images import ROOT, check, compose_base, log, run

PROJECT = "tf-alexnet-smoke"
MODEL_NAME = "alexnet"
TRAIN_EXAMPLES = 3000
TEST_IMAGES = 320
FILES_PER_REQUEST = 16  # the compose file's TF_ALEXNET_SERVE_MAX_FILES
API_TIMEOUT_S = 30.0  # the compose file's TF_ALEXNET_SERVE_TIMEOUT_S
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"


# --- the stack ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """docker-compose on the project's files plus the smoke test's overrides."""

    def __init__(self, docker: str, standin: bool, data: pathlib.Path) -> None:
        self.docker = docker
        files = [ROOT / "docker-compose.yml", ROOT / "tests/docker/compose.smoke.yml"]
        if standin:
            files.append(ROOT / "tests/docker/compose.tfserving-standin.yml")
        self.command = [*compose_base(), "--project-name", PROJECT]
        self.command += ["--project-directory", str(ROOT)]
        for file in files:
            self.command += ["--file", str(file)]
        self.ports = {"API_PORT": free_port(), "TFSERVING_GRPC_PORT": free_port()}
        self.ports["TFSERVING_REST_PORT"] = free_port()
        self.env = {
            **os.environ,
            **{name: str(port) for name, port in self.ports.items()},
            "FASHION_MNIST_DIR": str(data),
            "TRAIN_EPOCHS": "1",
            "TRAIN_EXAMPLES": str(TRAIN_EXAMPLES),
            "TRAIN_ARGS": "--validation-fraction 0.02",  # 1,200 validation images, not 6,000
            "RUN_NAME": "smoke-1",
        }
        self.api = f"http://127.0.0.1:{self.ports['API_PORT']}"
        self.tfserving = f"http://127.0.0.1:{self.ports['TFSERVING_REST_PORT']}"

    def __call__(self, *args: str, timeout: float = 1800, **env: str) -> str:
        return run([*self.command, *args], timeout=timeout, env={**self.env, **env}).stdout

    def container(self, service: str) -> str:
        ids = self("ps", "--all", "-q", service).split()
        check(ids, f"no {service} container")
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        out = run([self.docker, "inspect", self.container(service)]).stdout
        return json.loads(out)[0]

    def wait_healthy(self, service: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.inspect(service)["State"]).get("Health", {}).get(
            "Status"
        ) != "healthy":
            check(state["Running"], f"{service} is not running: {state}")
            check(time.monotonic() < deadline, f"{service} not healthy after {timeout} s")
            time.sleep(1)

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=300)


def _timestamp(text: str) -> float:
    """Seconds since the epoch of Docker's RFC 3339 times (nanoseconds, trailing zeros cut)."""
    from datetime import datetime

    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float("0." + (fraction or "0"))


def started(info: dict[str, Any]) -> float:
    return _timestamp(info["State"]["StartedAt"])


def finished(info: dict[str, Any]) -> float:
    return _timestamp(info["State"]["FinishedAt"])


# --- real Fashion-MNIST test images --------------------------------------------------------------


def test_pngs(data: pathlib.Path, count: int) -> list[bytes]:
    """The first `count` test images of the originals, as PNGs."""
    import numpy as np
    import tensorflow as tf

    raw = gzip.decompress((data / "t10k-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28, 1)[:count]
    return [tf.io.encode_png(image).numpy() for image in images]


def predict_all(client: Any, url: str, pngs: list[bytes]) -> list[int]:
    """Class ids of every image, FILES_PER_REQUEST at a time, through `client`."""
    ids: list[int] = []
    for start in range(0, len(pngs), FILES_PER_REQUEST):
        chunk = pngs[start : start + FILES_PER_REQUEST]
        files = [("file", (f"{start + i}.png", png, "image/png")) for i, png in enumerate(chunk)]
        response = client.post(url, files=files)
        check(response.status_code == 200, f"{url}: {response.status_code} {response.text}")
        ids += [p["class_id"] for p in response.json()["predictions"]]
    return ids


def local_class_ids(base_path: pathlib.Path, pngs: list[bytes]) -> list[int]:
    """The same images through the facade's local (embedded TensorFlow) backend.

    In float32, as the stack's TF Serving runs the export: the local backend's bf16 rewrite
    (`BF16=auto` on CPUs with bf16 units) can flip the top class of a near tie.
    """
    from fastapi.testclient import TestClient
    from tf_alexnet_serving import Settings, create_app

    settings = Settings(
        backend="local", model_base_path=str(base_path), model_name=MODEL_NAME, bf16="off"
    )
    with TestClient(create_app(settings)) as client:
        return predict_all(client, "/predict", pngs)


class Poller(threading.Thread):
    """POSTs one image to /predict in a loop; records (status, version) of every answer."""

    def __init__(self, url: str, png: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.png = url, png
        self.answers: list[tuple[int, int | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=API_TIMEOUT_S + 10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(self.url, files={"file": ("p.png", self.png)})
                    version = response.json().get("model", {}).get("version")
                    self.answers.append((response.status_code, version))
                except (httpx.HTTPError, ValueError) as err:
                    self.answers.append((0, None))
                    log(f"poll failed: {err!r}")
                time.sleep(0.1)
