"""Seconds-long smoke runs of every benchmark: the harness works and writes its results.

The real runs (minutes to an hour) are not part of the suite; their results are committed in
docs/benchmarks/. These tests check that each command still runs end to end on the current
code and that its JSON and Markdown hold the figures the README quotes.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(script: str, tmp_path, *args: str) -> dict:
    name = script.removesuffix(".py")
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["machine"]["cores"] >= 1 and result["machine"]["versions"]["tensorflow"]
    assert result["command"].startswith(f"python -m benchmarks.{name} --smoke")
    assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    return result


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is a benchmark-only dependency (pip install torch==2.13.0); CI installs it",
)
def test_train_throughput_smoke(tmp_path):
    result = _run("train_throughput.py", tmp_path)
    names = {row["name"] for row in result["summary"]}
    assert names == {"tf", "torch"}
    tf_row = next(row for row in result["summary"] if row["name"] == "tf")
    assert tf_row["median_images_per_second"] > 0 and tf_row["median_ratio_to_torch"] > 0
    assert (tmp_path / "train_throughput.png").stat().st_size > 1000


def test_pipeline_smoke(tmp_path, fashion_mnist):
    result = _run("pipeline.py", tmp_path)
    (row,) = result["rows"]
    assert row["preset"] == "cpu" and row["image_size"] == 28 and row["batch_size"] == 256
    assert row["augmentation"] == {"flip": True, "crop": "none", "crop_fraction": 0.875}
    assert row["pipeline_images_per_second"] > 0 and row["model_images_per_second"] > 0
    assert row["headroom"] == pytest.approx(
        row["pipeline_images_per_second"] / row["model_images_per_second"]
    )


def test_serving_smoke(tmp_path, fashion_mnist):
    result = _run("serving.py", tmp_path)
    assert [(r["mode"], r["concurrency"]) for r in result["facade"]] == [
        ("batching on", 1),
        ("batching on", 8),
        ("batching off", 1),
        ("batching off", 8),
    ]
    for row in result["facade"] + result["client_paths"]:
        assert row["errors"] == {} and row["requests"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    unbatched = [r for r in result["facade"] if r["mode"] == "batching off"]
    assert all(r["mean_batch_size"] == 1 for r in unbatched)
    assert {r["backend"] for r in result["client_paths"]} == {
        "local",
        "tfserving-rest",
        "tfserving-grpc",
    }
    assert set(result["goals"]["met"]) == {
        ">=80% of ceiling at c32",
        ">=3x unbatched at c32",
        "p50 c1 within 1.3x raw",
    }


def test_accuracy_smoke(tmp_path, fashion_mnist):
    result = _run("accuracy.py", tmp_path)
    (row,) = result["summary"]
    assert row["name"] == "cpu" and row["epochs"] == 1
    (run,) = result["runs"]
    assert 0 <= run["test_accuracy"] <= 1 and run["config"]["train_examples"] == 512  # 2 steps
    assert "CPU target" in (tmp_path / "accuracy.md").read_text()
    summary = subprocess.run(
        [sys.executable, "-m", "benchmarks.summary", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert summary.returncode == 0, summary.stderr
    headline = (tmp_path / "README.md").read_text()
    assert f"test accuracy {run['test_accuracy']:.4f}" in headline and "| missed |" in headline
