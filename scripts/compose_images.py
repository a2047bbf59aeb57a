"""The compose smoke test's engine and images (scripts/compose_smoke.py, step 1).

Finds the Docker client and compose command, says why no engine can be used, and builds (or
finds) every image the stack needs: the official Python base if it can be pulled, else a
Debian bookworm base from debootstrap; TF Serving's official image if it can be pulled, else
the project's stand-in. One build at a time per machine (BUILD_LOCK).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
LABEL = "org.tf-alexnet.smoke=1"
DEBIAN_BASE = "tf-alexnet-smoke-base:bookworm-python3.11"
IMAGES = {
    "train": "tf-alexnet-smoke-train:0.1.0",
    "api": "tf-alexnet-smoke-api:0.1.0",
    "tfserving-standin": "tf-alexnet-smoke-tfserving-standin:0.1.0",
}
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
