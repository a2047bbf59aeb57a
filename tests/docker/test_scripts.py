"""The container shell scripts and CI's script pass bash and shellcheck; the smoke driver's CLI."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.docker.common import ROOT, SMOKE, STANDIN_SCRIPT, TRAINER_SCRIPT

SCRIPTS = [TRAINER_SCRIPT, STANDIN_SCRIPT, ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_bash_and_shellcheck(script: pathlib.Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK), f"{script.name} should be executable"
    if not shutil.which("shellcheck"):
        pytest.skip("needs shellcheck (apt-get install shellcheck) for the lint half")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_smoke_driver_says_what_is_missing(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SMOKE), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"compose_smoke: error: no Fashion-MNIST originals in {tmp_path}"
    )
