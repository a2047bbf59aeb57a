"""The container shell scripts and CI's script pass bash and shellcheck, and pass a stop on to
the command they run; the smoke driver's CLI."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from tests.docker.common import K8S_TRAINING, ROOT, SMOKE, STANDIN_SCRIPT, TRAINER_SCRIPT

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


def _k8s_trainer_script() -> str:
    """The `sh -c` script of docs/k8s/training.yaml's trainer container."""
    documents = [doc for doc in yaml.safe_load_all(K8S_TRAINING.read_text()) if doc]
    (statefulset,) = [doc for doc in documents if doc["kind"] == "StatefulSet"]
    (trainer,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert trainer["command"] == ["/bin/sh", "-c"]
    (script,) = trainer["args"]
    return str(script)


def test_k8s_trainer_script_passes_shellcheck_as_posix_sh(tmp_path: pathlib.Path) -> None:
    """The image's /bin/sh is dash: the script must keep to POSIX sh."""
    script = tmp_path / "k8s-trainer.sh"
    script.write_text("#!/bin/sh\n" + _k8s_trainer_script())
    subprocess.run([shutil.which("dash") or "/bin/sh", "-n", str(script)], check=True)
    if not shutil.which("shellcheck"):
        pytest.skip("needs shellcheck (apt-get install shellcheck) for the lint half")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _pid_1_command() -> list[str]:
    """A command prefix that runs a command as PID 1 of a new PID namespace, as a container's
    command runs: PID 1 ignores a signal it has no handler for. Skips without `unshare`."""
    for prefix in (["unshare", "--pid", "--fork"], ["unshare", "-r", "--pid", "--fork"]):
        if (
            shutil.which("unshare")
            and not subprocess.run([*prefix, "true"], capture_output=True).returncode
        ):
            return prefix
    pytest.skip("needs `unshare --pid` (root, or user namespaces) to run a script as PID 1")


def _children(pid: int) -> list[int]:
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _poll(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


class _Pod:
    """A command run as PID 1, as a container without an init runs it (docs/k8s/training.yaml's
    trainer script by default, with dash: the image's /bin/sh): `pid` is its process (outside
    the namespace), `out` its output."""

    def __init__(
        self, tmp_path: pathlib.Path, env: dict[str, str], command: list[str] | None = None
    ) -> None:
        if command is None:
            command = [shutil.which("dash") or "/bin/sh", "-c", _k8s_trainer_script()]
        self.out = tmp_path / "out"
        with open(self.out, "w") as out:
            self.process = subprocess.Popen([*_pid_1_command(), *command], env=env, stdout=out)
        found: list[int] = []

        def seen_or_ended() -> bool:  # a shell that ends at once may end before it is seen
            found.extend(_children(self.process.pid))
            return bool(found) or self.process.poll() is not None

        _poll(seen_or_ended, "shell")
        self.pid = found[0] if found else None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """`signum` to the shell alone, as the kubelet sends SIGTERM to the container's PID 1."""
        assert self.pid is not None, "the shell had ended"
        os.kill(self.pid, signum)

    def running(self, command: str) -> bool:
        """Whether the shell, or a child of it, runs `command` (its argv joined by spaces)."""
        if self.pid is None:
            return False
        for pid in [self.pid, *_children(self.pid)]:
            try:
                argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            except OSError:
                continue
            if b" ".join(argv).decode() == command:
                return True
        return False


StartPod = Callable[..., _Pod]


@pytest.fixture
def pod(tmp_path: pathlib.Path) -> Iterator[StartPod]:
    pods: list[_Pod] = []

    def start(env: dict[str, str], command: list[str] | None = None) -> _Pod:
        pods.append(_Pod(tmp_path, env, command))
        return pods[-1]

    yield start
    for started in pods:  # a namespace ends with its PID 1, and everything in it
        if started.process.poll() is None and started.pid is not None:
            os.kill(started.pid, signal.SIGKILL)
            started.process.wait(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_k8s_trainer_passes_a_stop_on_to_training(
    tmp_path: pathlib.Path, pod: StartPod, signum: signal.Signals
) -> None:
    """The shell is the pod's PID 1: `kubectl delete`'s SIGTERM must reach training, which
    was SIGKILLed 30 s later instead. SIGINT goes on as SIGTERM (a background command ignores
    SIGINT)."""
    mark = tmp_path / "mark"
    env = _trainer_env(tmp_path, FAKE_CLI, FAKE_MARK=str(mark), POD_NAME="alexnet-train-1")
    started = pod(env)
    _poll(mark.with_suffix(".started").exists, "training")
    assert mark.with_suffix(".started").read_text() == "train --preset"
    started.stop(signum)
    assert started.process.wait(timeout=30) == 143  # training's status
    assert mark.read_text() == "terminated"
    assert "training finished" not in started.out.read_text()


EXITING_CLI = """#!/usr/bin/env python3
import os, pathlib, sys
pathlib.Path(os.environ["FAKE_TF_CONFIG"]).write_text(os.environ["TF_CONFIG"])
sys.exit(int(os.environ["FAKE_STATUS"]))
"""


def _exiting_trainer_env(
    tmp_path: pathlib.Path, tf_config: pathlib.Path, status: int, pod_name: str
) -> dict[str, str]:
    """A pod's environment whose `tf-alexnet` records its TF_CONFIG and exits with `status`."""
    return _trainer_env(
        tmp_path,
        EXITING_CLI,
        FAKE_TF_CONFIG=str(tf_config),
        FAKE_STATUS=str(status),
        POD_NAME=pod_name,
    )


def test_k8s_trainer_exits_with_a_failed_trainings_status(
    tmp_path: pathlib.Path, pod: StartPod
) -> None:
    """A failed training ends the container with its status: Kubernetes restarts it."""
    tf_config = tmp_path / "tf_config"
    started = pod(_exiting_trainer_env(tmp_path, tf_config, 3, "alexnet-train-1"))
    assert started.process.wait(timeout=60) == 3
    assert json.loads(tf_config.read_text())["task"] == {"type": "worker", "index": 1}
    assert "training finished" not in started.out.read_text()


def test_k8s_trainer_idles_once_trained_until_stopped(
    tmp_path: pathlib.Path, pod: StartPod
) -> None:
    """A finished pod stays up for `kubectl cp` (a StatefulSet restarts a container that ends,
    and training a finished run again is refused), until SIGTERM ends it."""
    started = pod(_exiting_trainer_env(tmp_path, tmp_path / "tf_config", 0, "alexnet-train-0"))
    _poll(lambda: "training finished: /runs/cpu\n" in started.out.read_text(), "line")
    _poll(lambda: started.running("sleep infinity"), "idle sleep")
    assert started.process.poll() is None
    started.stop()  # `kubectl delete`: no 30 s wait for the kubelet's SIGKILL
    assert started.process.wait(timeout=30) == 143


def _stopped_at(script: str, after: str, once_started: bool = False) -> str:
    """`script` with a SIGTERM to itself right after its first line that holds `after` (once
    the fake command has started, if `once_started`): a stop that lands in that window, as a
    loaded machine can make one land (a flake: a pod waited for a training that had started
    before the shell had its PID, and the stop was lost)."""
    lines = script.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if after in line)
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    stop = [f"{indent}kill -TERM $$\n"]
    if once_started:
        stop.insert(0, f'{indent}until [ -e "$FAKE_MARK.started" ]; do sleep 0.05; done\n')
    return "".join([*lines[: index + 1], *stop, *lines[index + 1 :]])


STOP_POINTS = [
    ("k8s", "trap ", False),
    ("k8s", "tf-alexnet train ", True),
    ("k8s", "CHILD=$!", True),
    ("compose", "trap ", False),
    ("compose", '"$@" &', True),
    ("compose", "child=$!", True),
]


@pytest.mark.parametrize(
    ("script_kind", "after", "once_started"),
    STOP_POINTS,
    ids=[f"{kind}: after {after.strip()}" for kind, after, _ in STOP_POINTS],
)
def test_trainer_scripts_pass_on_a_stop_that_comes_before_the_wait(
    tmp_path: pathlib.Path, pod: StartPod, script_kind: str, after: str, once_started: bool
) -> None:
    """A stop anywhere from the trap to the `wait` ends the script as PID 1, and training if
    it started (else before it starts): one that came after the fork but before the shell had
    the training's PID was lost, and the pod trained on (k8s: docs/k8s/training.yaml's script
    in dash; compose: docker/train-and-export.sh)."""
    mark = tmp_path / "mark"
    env = _trainer_env(tmp_path, FAKE_CLI, FAKE_MARK=str(mark), POD_NAME="alexnet-train-1")
    if script_kind == "k8s":
        script = _stopped_at(_k8s_trainer_script(), after, once_started)
        command = [shutil.which("dash") or "/bin/sh", "-c", script]
    else:
        path = tmp_path / "train-and-export.sh"
        path.write_text(_stopped_at(TRAINER_SCRIPT.read_text(), after, once_started))
        command = ["bash", str(path)]
    started = pod(env, command)
    assert started.process.wait(timeout=30) == 143
    if once_started:
        assert mark.read_text() == "terminated"
    else:
        assert not mark.with_suffix(".started").exists()
    assert "training finished" not in started.out.read_text()
    assert not (tmp_path / "runs" / "quick" / "exported.txt").exists()


def test_k8s_trainer_idle_ends_on_a_stop_that_comes_before_it(
    tmp_path: pathlib.Path, pod: StartPod
) -> None:
    """A stop between the training's end and the idle sleep ends the pod: it idled on."""
    script = _stopped_at(_k8s_trainer_script(), 'echo "training finished')
    env = _exiting_trainer_env(tmp_path, tmp_path / "tf_config", 0, "alexnet-train-0")
    started = pod(env, [shutil.which("dash") or "/bin/sh", "-c", script])
    assert started.process.wait(timeout=30) == 143
    assert "training finished: /runs/cpu\n" in started.out.read_text()


def test_trainer_script_passes_sigterm_on_as_pid_1(tmp_path: pathlib.Path, pod: StartPod) -> None:
    """Without Docker's init (`docker run` without --init, a Kubernetes pod of the image) the
    script is PID 1, which ignores a signal it has no handler for: its trap is one."""
    mark = tmp_path / "mark"
    started = pod(
        _trainer_env(tmp_path, FAKE_CLI, FAKE_MARK=str(mark)), ["bash", str(TRAINER_SCRIPT)]
    )
    _poll(mark.with_suffix(".started").exists, "training")
    started.stop()
    assert started.process.wait(timeout=30) == 143
    assert mark.read_text() == "terminated"
