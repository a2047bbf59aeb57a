"""Multi-worker training with two real `tf-alexnet train --strategy multiworker` processes.

The workers talk over 127.0.0.1 with TensorFlow's real collective operations. Each test
kills whatever it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import REPO, free_port, run_cli
from tf_alexnet import keras_compat
from tf_alexnet.cluster import Role, describe_peer_error, read_tf_config
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir
from tf_alexnet.saving import load_model
from tf_alexnet.train import WORKER_WEIGHTS

TRAIN_ARGS = (
    "train", "--preset", "quick", "--train-examples", "256", "--validation-fraction", "0.01",
    "--batch-size", "16", "--collective-timeout", "60",
)  # fmt: skip
"""8 steps of a global batch of 32 per epoch, on real Fashion-MNIST at 28 px."""


def tf_config(addresses: list[str], index: int) -> str:
    return json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


class Cluster:
    """Two worker processes running the same command, each with its own TF_CONFIG."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.tmp_path = tmp_path
        self.addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        self.processes: list[subprocess.Popen[str]] = []
        self.runs = 0

    def start(self, *args: str) -> list[subprocess.Popen[str]]:
        self.runs += 1
        self.processes = []
        for index in range(2):
            log = open(self.tmp_path / f"run{self.runs}-worker{index}.log", "w+")  # noqa: SIM115
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env["TF_CONFIG"] = tf_config(self.addresses, index)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tf_alexnet.cli", *args],
                    cwd=REPO,  # so `-m` imports this checkout's package
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        return self.processes

    def output(self, index: int) -> str:
        return (self.tmp_path / f"run{self.runs}-worker{index}.log").read_text()

    def wait(self, timeout: float) -> list[int]:
        return [process.wait(timeout=timeout) for process in self.processes]

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.kill_all()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_workers_train_in_sync_survive_a_kill_and_resume(fashion_mnist, cluster, tmp_path):
    run = RunDir(tmp_path / "run")
    command = (
        *TRAIN_ARGS,
        "--epochs",
        "3",
        "--strategy",
        "multiworker",
        "--run-dir",
        str(run.root),
    )
    chief_backup, worker_backup = run.worker_backup("worker-0"), run.worker_backup("worker-1")

    # 1. Start both; kill worker 1 once both have finished (and backed up) epoch 1.
    chief, worker = cluster.start(*command)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and chief.poll() is None and worker.poll() is None:
        if run.finished_epochs(chief_backup) >= 1 and run.finished_epochs(worker_backup) >= 1:
            break
        time.sleep(0.05)
    assert chief.poll() is None and worker.poll() is None, cluster.output(0)[-3000:]
    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    worker.wait()
    finished = run.finished_epochs(chief_backup)
    assert 1 <= finished < 3

    # 2. The chief notices within a bounded time and says so in one line.
    code = chief.wait(timeout=120)
    seconds = time.monotonic() - killed
    message = [line for line in cluster.output(0).splitlines() if "tf-alexnet: error:" in line]
    assert code == 1, cluster.output(0)[-3000:]
    assert len(message) == 1 and "lost the other workers" in message[0], message
    assert "resumes after the last finished epoch" in message[0]
    print(f"the chief failed {seconds:.1f} s after the kill: {message[0]}")
    assert seconds < 90
    assert not run.metrics.exists()

    # 3. The same commands resume after the last epoch both workers finished, and finish.
    finished = min(run.finished_epochs(chief_backup), run.finished_epochs(worker_backup))
    cluster.start(*command)
    assert cluster.wait(timeout=240) == [0, 0], cluster.output(0)[-3000:] + cluster.output(1)
    assert f"resuming after epoch {finished}" in cluster.output(0)
    assert f"resuming after epoch {finished}" in cluster.output(1)
    assert [int(row["epoch"]) for row in run.read_history()] == [0, 1, 2]

    # 4. The chief wrote the run and its models load; worker 1 wrote only its own folder.
    for path in (run.config, run.best_model, run.final_model, run.history, run.curves):
        assert path.is_file(), path
    metrics = json.loads(run.metrics.read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch_size"] == 32
    assert metrics["epochs"] == 3
    assert sorted(p.name for p in run.workers.iterdir()) == ["worker-1"]
    assert [p.name for p in (run.workers / "worker-1").iterdir()] == [WORKER_WEIGHTS]
    assert not run.backup.exists()  # both workers deleted their backups when done
    final = load_model(run.final_model)
    assert final.input_shape == (None, 28, 28, 1)
    load_model(run.best_model)

    # 5. Both workers hold identical weights at the end (mirrored variables stayed in sync).
    worker_model = load_model(run.final_model, compile=False)
    worker_model.load_weights(run.workers / "worker-1" / WORKER_WEIGHTS)
    chief_weights, worker_weights = final.get_weights(), worker_model.get_weights()
    assert len(chief_weights) == len(worker_weights) > 10
    for ours, theirs in zip(chief_weights, worker_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.timeout(120)
def test_keras_20585_workaround_is_still_needed():
    """Fails once Keras fixes keras-team/keras#20585: then delete `tf_alexnet.keras_compat`.

    Runs the upstream reproduction (plain MultiWorkerMirroredStrategy, two workers).
    """
    assert keras_compat.needs_keras_20585_workaround()
    result = subprocess.run(
        [sys.executable, str(REPO / "docs" / "upstream" / "repro_keras_20585.py")],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode != 0, "fit now works with two workers: remove the workaround"
    assert "Attempt to convert a value (PerReplica" in result.stderr, result.stderr[-3000:]


def test_the_workaround_applies_only_to_affected_keras_versions():
    assert keras_compat.needs_keras_20585_workaround("3.15.1")
    assert keras_compat.needs_keras_20585_workaround("3.5.0")
    assert not keras_compat.needs_keras_20585_workaround("3.16.0")
    assert not keras_compat.needs_keras_20585_workaround("2.15.0")


WORKERS = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}


@pytest.mark.parametrize(
    ("spec", "role"),
    [
        ({"cluster": WORKERS, "task": {"type": "worker", "index": 0}}, Role("worker", 0, 2, True)),
        ({"cluster": WORKERS, "task": {"type": "worker", "index": 1}}, Role("worker", 1, 2, False)),
        (
            {"cluster": {"chief": ["a:1"], **WORKERS}, "task": {"type": "worker", "index": 0}},
            Role("worker", 0, 3, False),
        ),
        (
            {"cluster": {"chief": ["a:1"], **WORKERS}, "task": {"type": "chief", "index": 0}},
            Role("chief", 0, 3, True),
        ),
    ],
)
def test_tf_config_roles(spec, role):
    assert read_tf_config({"TF_CONFIG": json.dumps(spec)}) == role


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs the TF_CONFIG environment variable"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "should be a JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', 'needs a "cluster" object'),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps"}}', "Received the job 'ps'"),
        ('{"cluster": {"worker": ["no-port"]}, "task": {}}', 'list of "host:port" strings'),
        ('{"cluster": {"worker": ["a:1"]}}', 'needs "task"'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}', 'needs "task"'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "[0, 1)"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}', "integer"),
    ],
)
def test_tf_config_mistakes_are_one_line_errors(text, message):
    with pytest.raises(UserError) as info:
        read_tf_config({"TF_CONFIG": text})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_tf_config_on_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "tf_alexnet.cli", *TRAIN_ARGS, "--strategy", "multiworker",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tf-alexnet: error: --strategy multiworker needs the TF_CONFIG")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()


def test_malformed_tf_config_on_the_command_line(tmp_path):
    result = run_cli(
        *TRAIN_ARGS, "--strategy", "multiworker", "--run-dir", str(tmp_path / "run"),
        env={"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}}'},
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith('tf-alexnet: error: TF_CONFIG needs "task"')
    )
    assert "Traceback" not in result.stderr


def test_describe_peer_error_keeps_the_informative_line():
    text = (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2\n"
        "Collective ops is aborted by: Error reported from /job:worker/task:1: The following "
        "tasks are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\n"
        "The tasks have crashed."
    )
    assert describe_peer_error(RuntimeError(text)) == (
        "Error reported from /job:worker/task:1: The following tasks are unhealthy "
        "(stopped sending heartbeats): /job:worker/replica:0/task:1"
    )
    assert describe_peer_error(RuntimeError("Socket closed")) == "RuntimeError: Socket closed"


def test_kubernetes_manifests_parse():
    yaml = pytest.importorskip("yaml")
    documents = []
    for path in sorted((REPO / "docs" / "k8s").glob("*.yaml")):
        with open(path) as file:
            documents += [doc for doc in yaml.safe_load_all(file) if doc]
    kinds = {doc["kind"] for doc in documents}
    assert {"Service", "StatefulSet"} <= kinds
    for doc in documents:
        assert doc["apiVersion"] and doc["metadata"]["name"]
    statefulset = next(doc for doc in documents if doc["kind"] == "StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    assert statefulset["spec"]["serviceName"]
    # A StatefulSet restarts a container that exits, and training a finished run again is
    # refused: the trainer stays up once done (it crash-looped), and exits when it fails.
    (trainer,) = statefulset["spec"]["template"]["spec"]["containers"]
    script = trainer["args"][0]
    assert "--run-dir /runs/cpu || exit\n" in script and script.endswith("exec sleep infinity\n")
    # TF Serving answers /v1/models/NAME with 200 while the model is loading or failed to load:
    # readiness reads its state (an httpGet probe passed too early).
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    (tfserving,) = deployments["tfserving"]["spec"]["template"]["spec"]["containers"]
    probe = tfserving["readinessProbe"]
    assert "httpGet" not in probe and '"AVAILABLE"' in probe["exec"]["command"][-1]
    assert "/v1/models/alexnet" in probe["exec"]["command"][-1]
