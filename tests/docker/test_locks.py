"""The images' pinned requirements (docker/requirements-*.txt) satisfy pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.docker.common import DOCKERFILE, ROOT, locked


def assert_locked(requirements: list[str], pins: dict[str, str]) -> None:
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_locked_requirements_satisfy_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert_locked(project["dependencies"], locked("train"))
    assert_locked(project["optional-dependencies"]["serve"], locked("api"))
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert_locked(build, locked("build"))
    gpu = re.search(r'"tensorflow\[and-cuda\]==([^"]+)"', DOCKERFILE.read_text())
    assert gpu and gpu.group(1) == locked("train")["tensorflow"]  # train-gpu = train + CUDA
    assert not {"tensorflow", "keras", "tensorflow-serving-api"} & set(locked("api"))
