"""What the container tests share: the files' paths and small readers of compose and Dockerfile."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
COMPOSE_OWN_DATA = ROOT / "docker-compose.own-data.yml"
COMPOSE_SMOKE = ROOT / "tests" / "docker" / "compose.smoke.yml"
COMPOSE_STANDIN = ROOT / "tests" / "docker" / "compose.tfserving-standin.yml"
TFSERVING = ROOT / "serving" / "tfserving"
SMOKE = ROOT / "scripts" / "compose_smoke.py"
SMOKE_STACK = ROOT / "scripts" / "compose_stack.py"  # the driver's stack module, beside it
TRAINER_SCRIPT = ROOT / "docker" / "train-and-export.sh"
STANDIN_SCRIPT = ROOT / "docker" / "tensorflow_model_server.sh"
K8S_TRAINING = ROOT / "docs" / "k8s" / "training.yaml"
OWN_DATA_ENV = {"IMAGE_FOLDER": "/tmp", "CLASS_NAMES": '["cat", "dog"]'}


def load_yaml(path: pathlib.Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def compose_command() -> list[str] | None:
    """Debian's `docker-compose` (v1), else the `docker compose` plugin; both validate offline."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        return None
    return [docker, "compose"] if docker else None


def compose_config(*files: pathlib.Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = compose_command()
    if command is None:
        pytest.skip("needs docker-compose (apt-get install docker-compose) or `docker compose`")
    args = [*command, "--project-directory", str(ROOT)]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def flags(service: dict[str, Any]) -> dict[str, str]:
    """`--name=value` command-line flags of a service, as a dict."""
    pairs = (arg.removeprefix("--").partition("=") for arg in service["command"])
    return {name: value for name, _, value in pairs}


def port_mappings(service: dict[str, Any]) -> list[tuple[str | None, int, int]]:
    """(host address or None, host port, container port) of each published port, from
    `compose config`: long syntax, or docker-compose 1.x's "IP:HOST:TARGET/tcp" where an
    address is given."""
    mappings = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            mappings.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
        else:
            *host, published_port, target = str(port).split("/")[0].split(":")
            mappings.append((host[0] if host else None, int(published_port), int(target)))
    return mappings


def published(service: dict[str, Any]) -> dict[int, int]:
    """{container port: host port} of a service."""
    return {target: port for _, port, target in port_mappings(service)}


def host_addresses(service: dict[str, Any]) -> set[str | None]:
    """The host addresses a service's ports are published on (None: every interface)."""
    return {host for host, _, _ in port_mappings(service)}


def mounted_file(service: dict[str, Any], target: str) -> pathlib.Path:
    """The repository file bind-mounted (read-only) at `target` in `service`."""
    for volume in service["volumes"]:
        if isinstance(volume, str) and volume.split(":")[1] == target:
            assert volume.endswith(":ro"), f"{target} should be mounted read-only: {volume}"
            return ROOT / volume.split(":")[0]
    raise AssertionError(f"Nothing is mounted at {target}. Received: {service['volumes']}")


def volume_at(service: dict[str, Any], target: str) -> tuple[str, bool]:
    """(named volume, read-only) mounted at `target` in `service`."""
    for volume in service["volumes"]:
        if isinstance(volume, dict) and volume["target"] == target:
            return volume["source"], bool(volume.get("read_only"))
        if isinstance(volume, str) and volume.split(":")[1] == target:
            return volume.split(":")[0], volume.endswith(":ro")
    raise AssertionError(f"No volume at {target}. Received: {service['volumes']}")


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions per stage, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line):
            current = stages.setdefault(match.group(2), [line])
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


def locked(name: str) -> dict[str, str]:
    """{canonical name: version} of docker/requirements-NAME.txt."""
    pins = {}
    for line in (ROOT / "docker" / f"requirements-{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"not pinned with ==: {line}"
            pins[canonicalize_name(package)] = version
    return pins


def api_settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The facade's Settings as the api container builds them, from its environment."""
    from tf_alexnet_serving.settings import Settings

    for name in os.environ:
        if name.startswith("TF_ALEXNET_SERVE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    return Settings()
