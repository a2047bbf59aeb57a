"""Multi-worker training with two real `tf-alexnet train --strategy multiworker` processes.

The workers talk over 127.0.0.1 with TensorFlow's real collective operations. Each test
kills whatever it started, whatever happens.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
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

    def start(
        self, *args: str, only: tuple[int, ...] = (0, 1), extra: tuple[str, ...] = ()
    ) -> list[subprocess.Popen[str]]:
        """Starts the workers `only` names (both by default); worker 1 gets `extra` too."""
        self.runs += 1
        self.processes = []
        for index in only:
            log = open(self.tmp_path / f"run{self.runs}-worker{index}.log", "w+")  # noqa: SIM115
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env["TF_CONFIG"] = tf_config(self.addresses, index)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tf_alexnet.cli", *args, *(extra if index else ())],
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

    def errors(self, index: int) -> list[str]:
        """Worker `index`'s one-line errors."""
        return [line for line in self.output(index).splitlines() if "tf-alexnet: error:" in line]

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


def multiworker(run_dir: pathlib.Path, *args: str) -> tuple[str, ...]:
    return (*TRAIN_ARGS, *args, "--strategy", "multiworker", "--run-dir", str(run_dir))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_train_several_steps_per_execution(fashion_mnist, cluster, tmp_path):
    """The `cpu` preset (32 steps per execution), as docs/multiworker.md runs it, failed at
    its first step with a traceback: "You must feed a value for placeholder tensor
    'while/cond/Placeholder_1'" (Keras's multi-step loop under MultiWorkerMirroredStrategy)."""
    run = RunDir(tmp_path / "run")
    cluster.start(*multiworker(run.root, "--epochs", "1", "--steps-per-execution", "4"))
    assert cluster.wait(timeout=200) == [0, 0], cluster.output(0)[-3000:]
    assert "Note: 1 step per execution rather than 4" in cluster.output(0)
    assert [int(row["epoch"]) for row in run.read_history()] == [0]


@pytest.mark.timeout(240)
def test_workers_started_with_different_settings_stop_with_the_same_line(
    fashion_mnist, cluster, tmp_path
):
    """A different --batch-size failed with a traceback ("Shape mismatch in the collective
    instance"); a different --learning-rate trained to the end, silently, and left the workers
    with weights up to 18 apart."""
    run = RunDir(tmp_path / "run")
    cluster.start(*multiworker(run.root, "--epochs", "1"), extra=("--learning-rate", "0.2"))
    assert cluster.wait(timeout=200) == [2, 2], cluster.output(0)[-3000:]
    assert cluster.errors(0) == cluster.errors(1)
    (line,) = cluster.errors(0)
    assert "Every worker must run the same command" in line
    assert line.endswith("Received: worker-1's settings differ from worker-0's in learning_rate.")
    assert not run.config.exists() and not run.backup.exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_one_epoch_ahead_resumes_with_the_others(fashion_mnist, cluster, tmp_path):
    """A kill between two workers' backups of one epoch leaves one worker an epoch ahead. The
    weights were put back to the agreed epoch, but the data of the worker ahead was not: it
    ran out one epoch early and failed (FusedBatchNormV3 "scale must have the same number of
    elements as the channels of x"), and history.csv got the replayed epoch's row twice."""
    run = RunDir(tmp_path / "run")
    command = multiworker(run.root, "--epochs", "3")
    chief_backup, worker_backup = run.worker_backup("worker-0"), run.worker_backup("worker-1")
    cluster.start(*command)
    deadline = time.monotonic() + 200
    while min(run.finished_epochs(chief_backup), run.finished_epochs(worker_backup)) < 2:
        assert time.monotonic() < deadline and all(p.poll() is None for p in cluster.processes)
        time.sleep(0.02)
    cluster.kill_all()
    assert run.finished_epochs(chief_backup) == run.finished_epochs(worker_backup) == 2
    # What a kill after the chief's backup of epoch 2 and before worker 1's leaves.
    path = worker_backup / "training_metadata.json"
    metadata = json.loads(path.read_text())
    previous = metadata["previous"]
    assert previous["epoch"] == 1
    path.write_text(json.dumps({**metadata, **previous, "previous": None}))

    cluster.start(*command)
    assert cluster.wait(timeout=200) == [0, 0], cluster.output(0)[-3000:]
    assert "resuming after epoch 1" in cluster.output(0)
    assert "resuming after epoch 1" in cluster.output(1)
    rows = run.history.read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1", "2"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigterm_stops_a_worker_mid_training(fashion_mnist, cluster, tmp_path):
    """TensorFlow's preemption notifier took SIGTERM over from the CLI when the strategy
    started: a worker sent SIGTERM (`docker stop`, Kubernetes) trained on to the end."""
    run = RunDir(tmp_path / "run")
    _, worker = cluster.start(*multiworker(run.root, "--epochs", "3"))
    deadline = time.monotonic() + 200
    while run.finished_epochs(run.worker_backup("worker-1")) < 1:
        assert time.monotonic() < deadline and worker.poll() is None, cluster.output(1)[-3000:]
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    assert cluster.wait(timeout=120) == [1, 143], cluster.output(1)[-3000:]
    assert cluster.output(1).strip().splitlines()[-1] == "tf-alexnet: terminated"
    (line,) = cluster.errors(0)
    assert "worker-0 lost the other workers" in line
    assert not run.metrics.exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_worker_that_never_comes_is_named_in_one_line(cluster, tmp_path):
    """Worker 0 waited silently, for an hour, for a worker 1 that was never started; worker 1
    waited as long for a worker 0. Each now waits --collective-timeout seconds and names the
    worker missing. Here each is started alone, in a cluster of its own."""
    other = Cluster(tmp_path / "other")
    (tmp_path / "other").mkdir()
    try:
        cluster.start(*multiworker(tmp_path / "a", "--collective-timeout", "2"), only=(0,))
        other.start(*multiworker(tmp_path / "b", "--collective-timeout", "2"), only=(1,))
        assert cluster.wait(timeout=90) == [1]
        assert other.wait(timeout=90) == [1]
    finally:
        other.kill_all()
    (line,) = cluster.errors(0)
    assert line.startswith("tf-alexnet: error: worker-0: the cluster did not assemble within 2 s")
    assert f"worker-1 ({cluster.addresses[1]}) did not join" in line
    (line,) = other.errors(1)
    assert f"worker-0 ({other.addresses[0]}) did not join" in line
    assert f"waiting for worker-1 ({cluster.addresses[1]}) to join" in cluster.output(0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_worker_waiting_for_the_others(cluster, tmp_path):
    """TensorFlow waits for the cluster in C++, where Python's signal handlers do not run:
    Ctrl-C did nothing until the wait ended (an hour)."""
    # A process started in the background by a shell without job control (CI's) ignores
    # SIGINT, and its children inherit that: the worker, as a background job, kept ignoring
    # Ctrl-C (rightly). Start it as a terminal's foreground command is started.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        (worker,) = cluster.start(
            *multiworker(tmp_path / "run", "--collective-timeout", "0"), only=(0,)
        )
    finally:
        signal.signal(signal.SIGINT, inherited)
    deadline = time.monotonic() + 60
    while "to join" not in cluster.output(0):
        assert time.monotonic() < deadline and worker.poll() is None, cluster.output(0)[-3000:]
        time.sleep(0.1)
    time.sleep(1)  # into TensorFlow's wait
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=20) in (130, -signal.SIGINT)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_started_twice_with_overwrite_leaves_the_first_ones_backup(cluster, tmp_path):
    """A stray second `worker-1 --overwrite` (the same TF_CONFIG task started twice) deleted
    the backup of the worker-1 already running, then failed on the port that one holds."""
    run = RunDir(tmp_path / "run")
    backup = run.worker_backup("worker-1")
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 1, "weights": "w.weights.h5"}')
    (backup / "w.weights.h5").write_bytes(b"the first worker's weights")
    (first,) = cluster.start(
        *multiworker(run.root, "--collective-timeout", "120"), only=(1,)
    )  # waits for worker-0, holding its address
    deadline = time.monotonic() + 90
    while "to join" not in cluster.output(1):
        assert time.monotonic() < deadline and first.poll() is None, cluster.output(1)[-3000:]
        time.sleep(0.1)
    second = run_cli(
        *multiworker(run.root, "--overwrite"),
        env={"TF_CONFIG": tf_config(cluster.addresses, 1)},
        timeout=120,
    )
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    (line,) = [line for line in second.stderr.splitlines() if "error:" in line]
    assert line.startswith("tf-alexnet: error: worker-1 cannot listen on its TF_CONFIG address")
    assert sorted(p.name for p in backup.iterdir()) == ["training_metadata.json", "w.weights.h5"]
    assert first.poll() is None  # the first one waits on, unharmed


@pytest.mark.timeout(180)
def test_a_worker_lost_while_the_model_is_built_is_one_line(fashion_mnist, tmp_path):
    """A worker that died after the cluster assembled and before training started (its TFDS
    build failed) left the chief with a traceback: the initial weights' broadcast
    ("UnavailableError ... CollectiveBcastSend ... The following tasks are unhealthy")."""
    script = (
        "import sys\n"
        "import tensorflow as tf\n"
        "from tf_alexnet import cli, train\n"
        "def lost(*args, **kwargs):\n"
        "    raise tf.errors.UnavailableError(None, None, 'Collective ops is aborted by: Error "
        "reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending "
        "heartbeats):\\n/job:worker/replica:0/task:1')\n"
        "train.AlexNet = lost\n"
        f"sys.exit(cli.main({list(multiworker(tmp_path / 'run', '--epochs', '1'))!r}))\n"
    )
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config([address], 0)},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "tf-alexnet: error:" in line]
    assert line.startswith("tf-alexnet: error: worker-0 lost the other workers (Error reported")
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_port_in_use_is_one_line(tmp_path):
    """A worker whose port another process holds failed with a traceback ("UnknownError:
    Could not start gRPC server")."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = run_cli(
            *multiworker(tmp_path / "run"),
            env={"TF_CONFIG": tf_config([address, f"127.0.0.1:{free_port()}"], 0)},
            timeout=120,
        )
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("tf-alexnet: error: worker-0 cannot listen on its TF_CONFIG address")
    assert address in line
    assert "to join" not in result.stdout  # it said it waited for worker-1 first
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


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
        (
            '{"cluster": {"chief": ["a:1"], "worker": ["b:2", "a:1"]}, "task": {"type": "chief"}}',
            'Received: "a:1" for both chief-0 and worker-1',
        ),
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


def _train_stage(dockerfile: pathlib.Path) -> str:
    """The Dockerfile's `train` stage, the image docs/k8s/training.yaml runs."""
    text = dockerfile.read_text()
    start = text.index(" AS train\n")
    end = text.find("\nFROM ", start)
    return text[start : end if end != -1 else None]


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
    # refused: the trainer stays up once done (it crash-looped), and exits when it fails
    # (tests/docker/test_scripts.py runs the script, and stops it).
    # The volumes are new and root's: the image's user must be given them to write the run.
    (user,) = re.findall(r"^USER (\d+)", _train_stage(REPO / "Dockerfile"), re.MULTILINE)
    security = statefulset["spec"]["template"]["spec"].get("securityContext", {})
    assert security.get("fsGroup") == int(user) == security.get("runAsUser"), security
    (trainer,) = statefulset["spec"]["template"]["spec"]["containers"]
    script = trainer["args"][0]
    assert "--run-dir /runs/cpu &\n" in script and 'exit "$STATUS"' in script
    idle = 'sleep infinity &\nCHILD=$!\n[ -z "$STOP" ] || kill -TERM "$CHILD" 2>/dev/null\n'
    assert script.endswith(idle + 'wait "$CHILD"\n')
    # TF Serving answers /v1/models/NAME with 200 while the model is loading or failed to load:
    # readiness reads its state (an httpGet probe passed too early).
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    (tfserving,) = deployments["tfserving"]["spec"]["template"]["spec"]["containers"]
    probe = tfserving["readinessProbe"]
    assert "httpGet" not in probe and '"AVAILABLE"' in probe["exec"]["command"][-1]
    assert "/v1/models/alexnet" in probe["exec"]["command"][-1]
