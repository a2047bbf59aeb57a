"""The container shell scripts and CI's script pass bash and shellcheck; the smoke driver's CLI."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

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


FAKE_CLI = """#!/usr/bin/env python3
import os, pathlib, signal, sys, time
mark = pathlib.Path(os.environ["FAKE_MARK"])
def stop(signum, frame):
    mark.write_text("terminated")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
mark.with_suffix(".started").write_text(" ".join(sys.argv[1:3]))
time.sleep(120)
"""


def _trainer_env(tmp_path: pathlib.Path, fake_cli: str, **extra: str) -> dict[str, str]:
    """The trainer script's environment with `fake_cli` as `tf-alexnet`, runs in
    `tmp_path/runs` and models in `tmp_path/models`, and `extra` variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tf-alexnet"
    fake.write_text(fake_cli)
    fake.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "RUNS_DIR": str(tmp_path / "runs"),
        "EXPORT_BASE_PATH": str(tmp_path / "models"),
        **extra,
    }


def test_trainer_script_passes_sigterm_on_to_training(tmp_path: pathlib.Path) -> None:
    """`docker stop` reaches the script (the init's child): training must get the SIGTERM."""
    mark = tmp_path / "mark"
    env = _trainer_env(tmp_path, FAKE_CLI, FAKE_MARK=str(mark))
    script = subprocess.Popen(["bash", str(TRAINER_SCRIPT)], env=env, text=True)
    deadline = time.monotonic() + 60
    while not mark.with_suffix(".started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.with_suffix(".started").read_text() == "train --preset"
    script.send_signal(signal.SIGTERM)
    assert script.wait(timeout=30) == 143
    assert mark.read_text() == "terminated"


RECORDING_CLI = """#!/usr/bin/env python3
import os, pathlib, sys
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
print("Exported version 10 to somewhere")
"""


def test_trainer_script_records_a_run_published_but_not_recorded(tmp_path: pathlib.Path) -> None:
    """Killed between the export's publish and `exported.txt`, a rerun published the same run
    again as the next version (found from outside: versions 9 and 10, one model)."""
    calls = tmp_path / "calls"
    runs, models = tmp_path / "runs", tmp_path / "models"
    env = _trainer_env(tmp_path, RECORDING_CLI, FAKE_CALLS=str(calls), RUN_NAME="run-9")
    for run in ("run-9", "run-90"):  # finished runs: no training
        (runs / run).mkdir(parents=True)
        (runs / run / "metrics.json").write_text("{}")

    def publish(version: int, run: str) -> None:
        extra = models / "alexnet" / str(version) / "assets.extra"
        extra.mkdir(parents=True)
        metadata = {"version": version, "source": str(runs / run / "best.keras")}
        (extra / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")  # as export

    publish(8, "run-90")  # another run whose name starts alike
    out = subprocess.run(["bash", str(TRAINER_SCRIPT)], env=env, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert calls.read_text().startswith("export ")  # not published yet: exported
    calls.unlink()
    (runs / "run-9" / "exported.txt").unlink()

    publish(9, "run-9")  # published, then killed before exported.txt
    out = subprocess.run(["bash", str(TRAINER_SCRIPT)], env=env, text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert not calls.exists()  # not exported again
    recorded = (runs / "run-9" / "exported.txt").read_text()
    assert recorded.startswith(f"Exported version 9 to {models / 'alexnet' / '9'} (found published")
    assert out.stdout == recorded


REFUSING_CLI = """#!/usr/bin/env python3
import sys
print("tf-alexnet: error: Only 96 training examples for a batch of 128: lower --batch-size or "
      "use more data.", file=sys.stderr)
sys.exit(2)
"""


def test_trainer_script_names_the_variables_behind_a_refused_flag(tmp_path: pathlib.Path) -> None:
    """Under Compose the trainer's settings are TRAIN_* variables, but a refused one was named
    only by its flag ("lower --batch-size", in `docker compose logs trainer`)."""
    env = _trainer_env(tmp_path, REFUSING_CLI, TRAIN_BATCH_SIZE="")
    out = subprocess.run(["bash", str(TRAINER_SCRIPT)], env=env, text=True, capture_output=True)
    assert out.returncode == 2
    first, hint = out.stderr.strip().splitlines()[-2:]
    assert "lower --batch-size" in first
    assert hint.startswith("train-and-export: under Compose, a flag named above is set by")
    assert "--batch-size TRAIN_BATCH_SIZE" in hint and "--epochs TRAIN_EPOCHS" in hint
