"""Smoke test of the whole compose stack on a real Docker engine, on real Fashion-MNIST.

    python scripts/compose_smoke.py [--data ../shared/data/fashion-mnist] [--summary FILE]
    python scripts/compose_smoke.py --check-engine    # why no engine can be used, if none
    python scripts/compose_smoke.py --prepare         # only build the images (step 1)

1. Builds the images with BuildKit (`--network host` for pip), from `python:3.11.13-slim-bookworm`
   when it can be pulled, else from a Debian bookworm base made with debootstrap (never under the
   official image's name). TF Serving is `tensorflow/serving:2.21.0` when `docker pull` gets it,
   else the project's stand-in (the Dockerfile's `tfserving-standin` target); one line says which.
2. `up`: the trainer trains a tiny run (one epoch on 3,000 images of the offline originals,
   validation on 1,200) and exports version 1 as uid 10001; TF Serving and the facade start in
   dependency order, healthy.
3. `POST /predict` through the stack on 320 real test images: every class id equals the local
   (embedded) backend's on the same exported version, image by image.
4. Retrains (version 2) while a client polls `/predict`: no failed request, the version moves
   from 1 to 2 and never back.
5. Stops the `tfserving` container: the facade answers 503 with a JSON error, quickly; starts it
   again: the facade recovers by itself.
6. `down` and `up` again: serving starts without training again.
Always ends with `down -v` of its own project (tf-alexnet-smoke); its images (tf-alexnet-smoke-*)
stay as a build cache. It never touches other containers, images or volumes.

Settings: DOCKER (the client; default Debian's docker.io client, which builds with BuildKit),
COMPOSE (default `docker-compose`, else `docker compose`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = "tf-alexnet-smoke"
MODEL_NAME = "alexnet"
LABEL = "org.tf-alexnet.smoke=1"
DEBIAN_BASE = "tf-alexnet-smoke-base:bookworm-python3.11"
IMAGES = {
    "train": "tf-alexnet-smoke-train:0.1.0",
    "api": "tf-alexnet-smoke-api:0.1.0",
    "tfserving-standin": "tf-alexnet-smoke-tfserving-standin:0.1.0",
}
TRAIN_EXAMPLES = 3000
TEST_IMAGES = 320
FILES_PER_REQUEST = 16  # the compose file's TF_ALEXNET_SERVE_MAX_FILES
API_TIMEOUT_S = 30.0  # the compose file's TF_ALEXNET_SERVE_TIMEOUT_S
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"
BUILD_LOCK = pathlib.Path(tempfile.gettempdir()) / "tf-alexnet-smoke" / "build.lock"
"""Held while images are built: one build at a time per machine, whoever started it."""


class SmokeError(Exception):
    pass


def log(message: str) -> None:
    print(f"compose_smoke: {message}", file=sys.stderr, flush=True)


def check(condition: object, message: object) -> None:
    if not condition:
        raise SmokeError(str(message))


# --- the engine and its clients ----------------------------------------------------------------


def docker_client() -> str:
    """$DOCKER, else Debian's client (the docker.io package's; it builds with BuildKit), else
    `docker` on PATH."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    with contextlib.suppress(OSError):
        listing = subprocess.run(
            ["dpkg", "-L", "docker.io"], capture_output=True, text=True
        ).stdout.split()
        debian = [path for path in listing if path.endswith("bin/docker")]
        if debian and os.access(debian[0], os.X_OK):
            return debian[0]
    return shutil.which("docker") or "docker"


def compose_base() -> list[str]:
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return [docker_client(), "compose"]


def engine_problem() -> str | None:
    """Why no engine can be used here (one line), or None when `docker info` answers."""
    docker = docker_client()
    if not shutil.which(docker):
        return f"no Docker client ({docker})"
    try:
        result = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 30 s"
    if result.returncode:
        # Docker 20.10 prints the reason among its stdout ("ERROR: Cannot connect ...").
        output = (result.stdout + "\n" + result.stderr).splitlines()
        lines = [ln.strip() for ln in output if "error" in ln.lower() and "pretty" not in ln]
        lines += [line.strip() for line in output if line.strip()] or ["no output"]
        return f"`docker info` failed: {lines[0][:160]}"
    if not (shutil.which(compose_base()[0]) or os.path.exists(compose_base()[0])):
        return "no docker-compose (apt-get install docker-compose)"
    return None


def run(
    command: list[str], *, timeout: float = 1800, check_rc: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs
    )
    if check_rc and result.returncode:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise SmokeError(f"`{shlex.join(command)}` exited {result.returncode}:\n{tail}")
    return result


class Timings:
    """Wall-clock seconds per phase, for the summary."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        log(f"{name} ...")
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - start, 1)
            log(f"{name}: {self.phases[name]} s")


# --- images ------------------------------------------------------------------------------------


def image_exists(docker: str, image: str) -> bool:
    return run([docker, "image", "inspect", image], check_rc=False).returncode == 0


def pull(docker: str, image: str) -> str | None:
    """None when `image` is here or was pulled, else why not (one line)."""
    if image_exists(docker, image):
        return None
    try:
        result = run([docker, "pull", image], check_rc=False, timeout=600)
    except subprocess.TimeoutExpired:
        return "timed out after 600 s"
    lines = result.stderr.strip().splitlines() or ["no output"]
    return None if result.returncode == 0 else lines[-1][:200]


def debian_base(docker: str) -> str:
    """A bookworm root file system from Debian's packages, imported as DEBIAN_BASE."""
    if image_exists(docker, DEBIAN_BASE):
        return DEBIAN_BASE
    if not shutil.which("debootstrap"):
        raise SmokeError("no base image: needs debootstrap (apt-get install debootstrap) as root")
    with tempfile.TemporaryDirectory(prefix="tf-alexnet-rootfs-") as tmp:
        rootfs = pathlib.Path(tmp) / "rootfs"
        packages = "python3.11,python3.11-venv,python3-distutils,ca-certificates"
        run(["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs)])
        # As in the official image: `python` on PATH. This machine's CA bundle, so that pip
        # trusts what the host trusts (e.g. a TLS-inspecting proxy's certificate).
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3.11")
        host_bundle = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
        if host_bundle.exists():
            shutil.copyfile(host_bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "debootstrap"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        changes = [
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL {LABEL}",
        ]
        flags = [arg for change in changes for arg in ("--change", change)]
        subprocess.run([docker, "import", *flags, "-", DEBIAN_BASE], stdin=tar.stdout, check=True)
        tar.wait()
    return DEBIAN_BASE


def build(docker: str, target: str, base: str) -> None:
    command = [docker, "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}"]
    command += ["--target", target, "--tag", IMAGES[target], "--label", LABEL, "."]
    run(
        command,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        timeout=3600,
    )


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
    """The same images through the facade's local (embedded TensorFlow) backend."""
    from fastapi.testclient import TestClient
    from tf_alexnet_serving import Settings, create_app

    settings = Settings(backend="local", model_base_path=str(base_path), model_name=MODEL_NAME)
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


# --- the scenario ------------------------------------------------------------------------------


def prepare(docker: str, summary: dict[str, Any], timings: Timings) -> bool:
    """Every image the stack needs, built (or found); returns whether TF Serving is the
    stand-in. Holds BUILD_LOCK, so a `--prepare` run started earlier (`.ci/run` starts one in
    the background while the other tests run) is waited for, then found in the cache."""
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with timings.phase("base image"):
            official_base = re.search(
                r"ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text()
            ).group(1)  # type: ignore[union-attr]
            why_not = pull(docker, official_base)
            base = official_base if why_not is None else debian_base(docker)
            summary["base_image"] = base
            log(f"base image: {base}" + (f" ({official_base}: {why_not})" if why_not else ""))
        with timings.phase("TF Serving image"):
            official = re.search(
                r"image: (tensorflow/serving:\S+)", (ROOT / "docker-compose.yml").read_text()
            ).group(1)  # type: ignore[union-attr]
            why_not = pull(docker, official)
            standin = why_not is not None
        summary["tfserving"] = (
            f"TF Serving: the project's stand-in ({IMAGES['tfserving-standin']}); "
            f"`docker pull {official}` failed: {why_not}"
            if standin
            else f"TF Serving: the official image {official}, unchanged"
        )
        print(f"compose_smoke: {summary['tfserving']}", flush=True)
        for target in ["api", "train"] + (["tfserving-standin"] if standin else []):
            with timings.phase(f"build {target}"):
                build(docker, target, base)
    return standin


def smoke(data: pathlib.Path, summary: dict[str, Any]) -> None:
    import httpx

    timings = Timings()
    summary["timings_s"] = timings.phases
    docker = docker_client()
    version = run([docker, "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    summary["engine"] = f"Docker Engine {version}"
    compose_version = run([*compose_base(), "version", "--short"], check_rc=False).stdout
    summary["compose"] = compose_version.strip()

    with timings.phase("images (waiting for a --prepare run, if one is building)"):
        standin = prepare(docker, summary, timings)

    stack = Stack(docker, standin, data)
    stack.down()  # a previous run's leftovers, of this project only
    try:
        with timings.phase("up: train v1, then tfserving, then api healthy"):
            stack("up", "--detach", "--no-build", timeout=1800)
            stack.wait_healthy("api")
        trainer, tfserving, api = (stack.inspect(s) for s in ("trainer", "tfserving", "api"))
        check(trainer["State"]["ExitCode"] == 0, "the trainer failed")
        check(finished(trainer) <= started(tfserving), "tfserving started before training ended")
        check(started(tfserving) <= started(api), "the api started before tfserving")
        owner = stack(
            "run", "--rm", "--no-deps", "-T", "--entrypoint", "stat", "trainer",
            "-c", "%u:%g %n", f"/models/{MODEL_NAME}/1", f"/models/{MODEL_NAME}/1/saved_model.pb",
        )  # fmt: skip
        check(all(line.startswith("10001:10001 ") for line in owner.split("\n") if line), owner)
        log(f"version 1 exported as uid 10001: {owner.split()}")

        with timings.phase(f"predict {TEST_IMAGES} real images: stack vs local backend"):
            pngs = test_pngs(data, TEST_IMAGES)
            with httpx.Client(timeout=API_TIMEOUT_S + 10) as client:
                stacked = predict_all(client, f"{stack.api}/predict", pngs)
                check(client.get(f"{stack.api}/readyz").json()["version"] == 1, "not version 1")
                if not standin:  # the stand-in has no Prometheus endpoint
                    metrics = client.get(f"{stack.tfserving}/monitoring/prometheus/metrics")
                    check(":tensorflow:serving:" in metrics.text, "no TF Serving metrics")
            with tempfile.TemporaryDirectory() as tmp:
                models = pathlib.Path(tmp) / MODEL_NAME
                models.mkdir()
                container = stack.container("tfserving")
                run([docker, "cp", f"{container}:/models/{MODEL_NAME}/1", str(models / "1")])
                local = local_class_ids(pathlib.Path(tmp), pngs)
            differ = [i for i, (a, b) in enumerate(zip(stacked, local, strict=True)) if a != b]
            check(not differ, f"class ids differ from the local backend's at images {differ}")
            summary["images_compared"] = len(pngs)
            log(f"{len(pngs)} images: the stack's class ids equal the local backend's")

        with timings.phase("retrain: version 2 while polling /predict"):
            poller = Poller(f"{stack.api}/predict", pngs[0])
            poller.start()
            stack("run", "--rm", "-T", "trainer", RUN_NAME="smoke-2", timeout=1800)
            deadline = time.monotonic() + 120
            while not poller.answers or poller.answers[-1][1] != 2:
                check(time.monotonic() < deadline, "the facade did not move to version 2")
                time.sleep(0.5)
            time.sleep(8)  # keep polling while TF Serving unloads version 1
            poller.stop.set()
            poller.join()
            answers = poller.answers
            failed = [a for a in answers if a[0] != 200]
            versions = [v for _, v in answers if v is not None]
            check(not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}")
            check(versions == sorted(versions) and set(versions) == {1, 2}, "not 1 then 2")
            status = httpx.get(f"{stack.tfserving}/v1/models/{MODEL_NAME}").json()
            states = {s["version"]: s["state"] for s in status["model_version_status"]}
            check(states.get("2") == "AVAILABLE" and states.get("1") != "AVAILABLE", states)
            summary["rollover_requests"] = len(answers)
            log(f"{len(answers)} requests during the rollover, none failed; {states}")

        with timings.phase("tfserving stopped: 503, then recovery"):
            api_started = started(stack.inspect("api"))
            stack("stop", "tfserving")
            start = time.monotonic()
            response = httpx.post(
                f"{stack.api}/predict",
                files={"file": ("p.png", pngs[0])},
                timeout=API_TIMEOUT_S + 10,
            )
            elapsed = time.monotonic() - start
            check(response.status_code == 503, f"{response.status_code}: {response.text}")
            check(response.json().get("detail"), response.text)  # a JSON error, named
            check(elapsed < API_TIMEOUT_S, f"the 503 took {elapsed:.1f} s")
            log(f"tfserving stopped: 503 in {elapsed:.2f} s: {response.json()}")
            summary["unavailable_503_after_s"] = round(elapsed, 2)
            stack("start", "tfserving")
            deadline = time.monotonic() + 180
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    files = {"file": ("p.png", pngs[0])}
                    if httpx.post(f"{stack.api}/predict", files=files).status_code == 200:
                        break
                check(time.monotonic() < deadline, "the facade did not recover")
                time.sleep(1)
            check(started(stack.inspect("api")) == api_started, "the api was restarted")
            summary["recovered_after_s"] = round(time.monotonic() - start, 1)

        with timings.phase("down, up again: no training"):
            stack("down", "--timeout", "10")
            stack("up", "--detach", "--no-build", timeout=900)
            stack.wait_healthy("api")
            logs = stack("logs", "--no-color", "trainer")
            check("already exported" in logs, f"the trainer trained again:\n{logs[-2000:]}")
            answer = httpx.post(f"{stack.api}/predict", files={"file": ("p.png", pngs[0])})
            check(answer.status_code == 200, answer.text)
            check(answer.json()["model"]["version"] == 2, answer.text)
    except SmokeError:
        with contextlib.suppress(Exception):
            log("ps:\n" + stack("ps"))
            log("logs:\n" + stack("logs", "--no-color", "--tail", "60"))
        raise
    finally:
        with timings.phase("down -v"):
            stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
    parser.add_argument("--summary", type=pathlib.Path, help="write the results here (JSON)")
    parser.add_argument(
        "--check-engine",
        action="store_true",
        help="only say (one line, exit 3) why no engine can be used; exit 0 if one can",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="only build the images (a later run waits for it, then finds them cached)",
    )
    args = parser.parse_args(argv)
    if args.check_engine:
        problem = engine_problem()
        if problem:
            print(problem)
        return 3 if problem else 0
    if not (args.data / "train-images-idx3-ubyte.gz").exists():
        print(f"compose_smoke: error: no Fashion-MNIST originals in {args.data}", file=sys.stderr)
        return 2
    problem = engine_problem()
    if problem:
        print(f"compose_smoke: error: no Docker engine: {problem}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {}
    start = time.monotonic()
    try:
        if args.prepare:
            timings = Timings()
            summary["timings_s"] = timings.phases
            prepare(docker_client(), summary, timings)
        else:
            smoke(args.data.resolve(), summary)
        summary["passed"] = True
    except SmokeError as err:
        summary["passed"] = False
        summary["error"] = str(err)
        log(f"FAILED: {err}")
    summary["total_s"] = round(time.monotonic() - start, 1)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2))
    log(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
