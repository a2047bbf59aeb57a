"""The real compose stack on a Docker engine, end to end (scripts/compose_smoke.py).

`.ci/run` installs and starts an engine where none answers; this test is skipped only where no
engine can be used at all, and says why in one line.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.docker.common import ROOT, SMOKE

DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"


def engine_problem() -> str | None:
    """None when the smoke driver finds a usable engine, else its one-line reason."""
    check = [sys.executable, str(SMOKE), "--check-engine"]
    result = subprocess.run(check, capture_output=True, text=True, timeout=120)
    return result.stdout.strip() or "no reason given" if result.returncode else None


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_compose_stack_trains_serves_rolls_over_and_recovers(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (DATA / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"needs the Fashion-MNIST originals in {DATA}")
    problem = engine_problem()
    if problem:
        pytest.skip(f"no Docker engine: {problem}")
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(SMOKE), "--data", str(DATA), "--summary", str(summary_file)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        timeout=3500,
    )
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    with capsys.disabled():  # what ran, on one line each, also under pytest's capture
        print(f"\ncompose_smoke: {summary.get('tfserving', 'TF Serving: not reached')}")
        facts = {k: v for k, v in summary.items() if k not in ("tfserving", "error")}
        print(f"compose_smoke: {json.dumps(facts)}")
    assert result.returncode == 0 and summary.get("passed"), result.stderr[-6000:]
