"""Multi-worker training: the `TF_CONFIG` cluster spec, each process's role, the strategy.

Every worker runs the same `tf-alexnet train --strategy multiworker ...` command with its
own `TF_CONFIG`, TensorFlow's standard cluster description, for example on the second of
two machines:

    {"cluster": {"worker": ["node-a:12345", "node-b:12345"]},
     "task": {"type": "worker", "index": 1}}

The chief is the `chief` task if the cluster has one, else worker 0. It alone writes the
run directory's files; the other workers keep only their own resume checkpoint
(`backup/<task>-<index>/`) and, at the end, their final weights (`workers/<task>-<index>/`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import signal
import socket
import threading
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import tensorflow as tf

from tf_alexnet.errors import ClusterError, UserError
from tf_alexnet.keras_compat import KerasCompatibleMultiWorkerStrategy, needs_keras_20585_workaround

ENV_TF_CONFIG = "TF_CONFIG"
# MultiWorkerMirroredStrategy runs `chief` and `worker` tasks (no parameter servers).
TRAINING_JOBS = ("chief", "worker")
_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:\-]+\]?:\d{1,5}$")
_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


@dataclasses.dataclass(frozen=True)
class Role:
    """This process's place in the training cluster."""

    task_type: str = "worker"
    task_id: int = 0
    num_workers: int = 1
    is_chief: bool = True
    # (task name, "host:port") of every task in the cluster, in TensorFlow's order
    tasks: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    @property
    def name(self) -> str:
        """`worker-1`, `chief-0`: names this process's own folders."""
        return f"{self.task_type}-{self.task_id}"


SINGLE_PROCESS = Role()


def read_tf_config(environ: Mapping[str, str] | None = None) -> Role:
    """Parses and checks `TF_CONFIG`; a mistake raises a one-line `UserError`."""
    text = (os.environ if environ is None else environ).get(ENV_TF_CONFIG, "").strip()
    if not text:
        raise UserError(
            f"--strategy multiworker needs the {ENV_TF_CONFIG} environment variable, "
            f"for example {_EXAMPLE} (see docs/multiworker.md)."
        )
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{ENV_TF_CONFIG} is not valid JSON ({err}).") from None
    if not isinstance(spec, dict):
        raise UserError(f"{ENV_TF_CONFIG} should be a JSON object like {_EXAMPLE}.")
    cluster, task = spec.get("cluster"), spec.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(
            f'{ENV_TF_CONFIG} needs a "cluster" object of job name -> ["host:port", ...]. '
            f"Received: {json.dumps(cluster)}"
        )
    for job, addresses in cluster.items():
        if job not in TRAINING_JOBS:
            raise UserError(
                f"{ENV_TF_CONFIG}: multi-worker training runs only {' and '.join(TRAINING_JOBS)} "
                f"tasks. Received the job {job!r}."
            )
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(isinstance(a, str) and _ADDRESS.match(a) for a in addresses)
        ):
            raise UserError(
                f'{ENV_TF_CONFIG}: cluster["{job}"] should be a list of "host:port" strings. '
                f"Received: {json.dumps(addresses)}"
            )
    seen: dict[str, str] = {}
    for job, addresses in cluster.items():
        for i, address in enumerate(addresses):
            if address in seen:
                raise UserError(
                    f"{ENV_TF_CONFIG}: every task needs an address of its own (two processes "
                    f'cannot listen on one port). Received: "{address}" for both {seen[address]} '
                    f"and {job}-{i}"
                )
            seen[address] = f"{job}-{i}"
    if len(cluster.get("chief", [])) > 1:
        raise UserError(f"{ENV_TF_CONFIG}: a cluster has at most one chief.")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise UserError(
            f'{ENV_TF_CONFIG} needs "task": {{"type": ..., "index": ...}} naming a job of '
            f"the cluster ({', '.join(cluster)}). Received: {json.dumps(task)}"
        )
    task_type, index = task["type"], task.get("index", 0)
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not 0 <= index < len(cluster[task_type])
    ):
        raise UserError(
            f'{ENV_TF_CONFIG}: task "index" should be an integer in [0, '
            f"{len(cluster[task_type])}) for the job {task_type!r}. Received: {json.dumps(index)}"
        )
    is_chief = task_type == "chief" or ("chief" not in cluster and index == 0)
    num_workers = sum(len(addresses) for addresses in cluster.values())
    tasks = tuple(
        (f"{job}-{i}", address)
        for job in TRAINING_JOBS
        for i, address in enumerate(cluster.get(job, []))
    )
    return Role(task_type, index, num_workers, is_chief, tasks)


def multi_worker_strategy(
    timeout_seconds: float, role: Role | None = None
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """`MultiWorkerMirroredStrategy` for the `TF_CONFIG` cluster, once every worker has joined.

    `timeout_seconds` bounds the wait for the other workers to join (a worker that never
    comes: `ClusterError` naming it) and every collective operation (the all-reduce of
    gradients and metrics), so a peer that hangs without dying fails the step too instead
    of stalling it forever (0 disables both). It must exceed the longest time one worker can
    run ahead of the others, e.g. while the chief plots and saves at the end of training.
    TensorFlow watches each timed collective with a thread: a small cost next to an AlexNet
    step. A peer that dies is noticed by the heartbeats of TensorFlow's coordination service
    (within about 10 s), which aborts the collectives of the survivors.

    Ctrl-C and SIGTERM end the process during that wait (see `_signals_stop_the_wait`).
    """
    role = role or read_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if timeout_seconds:
        _bound_the_join(resolver.cluster_spec(), timeout_seconds)
    cls = (
        KerasCompatibleMultiWorkerStrategy
        if needs_keras_20585_workaround()
        else tf.distribute.MultiWorkerMirroredStrategy
    )
    others = ", ".join(f"{name} ({address})" for name, address in role.tasks if name != role.name)
    address = dict(role.tasks).get(role.name, "")
    if _port_taken(address):  # said before "waiting for the others", not after it
        raise UserError(_port_in_use(role, address))
    try:
        with _signals_stop_the_wait():
            # Said once Ctrl-C ends the wait: a Ctrl-C that came between the line and the wait
            # reached Python's handler, which cannot run until the wait ends.
            print(
                f"{role.name}: waiting for {others or 'the other workers'} to join"
                + (
                    f" (at most {timeout_seconds:g} s, --collective-timeout)"
                    if timeout_seconds
                    else ""
                )
                + ".",
                flush=True,
            )
            strategy = cls(cluster_resolver=resolver, communication_options=options)
    except tf.errors.UnknownError as err:
        if "Could not start gRPC server" not in str(err):
            raise
        raise UserError(_port_in_use(role, address)) from None
    except tf.errors.DeadlineExceededError as err:
        missing = _missing_tasks(str(err), role)
        raise ClusterError(
            f"{role.name}: the cluster did not assemble within {timeout_seconds:g} s "
            f"(--collective-timeout): {missing}. Start every worker of TF_CONFIG with the "
            "same command."
        ) from None
    print(f"{role.name}: all {role.num_workers} workers joined.", flush=True)
    return strategy


def _port_in_use(role: Role, address: str) -> str:
    return (
        f"{role.name} cannot listen on its TF_CONFIG address {address}: another process "
        "uses that port (a worker still running?). Stop it, or give this task another port "
        "in every worker's TF_CONFIG. Received: Could not start gRPC server"
    )


def _port_taken(address: str) -> bool:
    """Whether another process listens on the port of `address` ("host:port"), which
    TensorFlow's gRPC server takes on every interface. Asked before the wait for the others:
    TensorFlow finds it only once the wait has begun. False when the port cannot be read."""
    port = address.rpartition(":")[2]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: TIME_WAIT is free
        try:
            probe.bind(("", int(port)))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def _bound_the_join(cluster_spec: tf.train.ClusterSpec, timeout_seconds: float) -> None:
    """Makes the strategy's start wait at most `timeout_seconds` for every worker to register.

    TensorFlow's default: the coordination service's leader (the chief) waits up to an hour
    for the others, silently. The strategy configures the service only when nothing has yet;
    this is its configuration, plus a registration barrier with our timeout.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    runtime = context.context()
    if runtime.coordination_service is not None:
        return
    jobs = cluster_spec.jobs
    runtime.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        cluster_register_timeout_in_ms=max(1, round(timeout_seconds * 1000)),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
            for job in TRAINING_JOBS
            if job in jobs
        ],
    )
    # Registration waits at a barrier until every task has registered, or the timeout.
    config = runtime.coordination_service
    assert config is not None
    config.cluster_register_with_barrier = True


def _missing_tasks(message: str, role: Role) -> str:
    """Who did not join, from TensorFlow's barrier error (the chief's view)."""
    names = {
        "/job:{}/replica:0/task:{}".format(*name.rsplit("-", 1)): name for name, _ in role.tasks
    }
    addresses = dict(role.tasks)
    reported = message.split("timed out task", 1)[-1]  # the chief's list, if there is one
    missing = [
        f"{names[path]} ({addresses[names[path]]})"
        for path in re.findall(r"/job:\w+/replica:0/task:\d+", reported)
        if path in names and names[path] != role.name
    ]
    if missing:
        return f"{', '.join(dict.fromkeys(missing))} did not join"
    leader = role.tasks[0] if role.tasks else ("the chief", "?")
    return f"{leader[0]} ({leader[1]}) did not answer"


@contextlib.contextmanager
def _signals_stop_the_wait() -> Iterator[None]:
    """Ctrl-C ends the process at once while TensorFlow waits for the cluster, and SIGTERM
    keeps its Python handler afterwards.

    TensorFlow waits in C++ holding Python's lock, where no Python signal handler runs (the
    CLI's turn Ctrl-C and SIGTERM into a clean stop once Python runs again): the command
    ignored Ctrl-C until the wait ended. Nothing is written during the wait, so SIGINT's
    default action, ending the process, loses nothing; an ignored SIGINT (a background job)
    stays ignored.

    The strategy also installs TensorFlow's preemption notifier as the process's SIGTERM
    handler, which only records the signal: SIGTERM (`docker stop`, Kubernetes) then no
    longer stopped a worker, which trained on to the end. Python's handler is put back once
    the strategy is made (during the wait itself TensorFlow has SIGTERM: the wait ends at
    its timeout).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigterm = signal.getsignal(signal.SIGTERM)
    sigint = signal.getsignal(signal.SIGINT)
    if callable(sigint):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, sigint)
        if sigterm is not None:  # None: not installed from Python; nothing to put back
            signal.signal(signal.SIGTERM, sigterm)


# What a collective operation raises when a peer died, restarted or stopped answering.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.FailedPreconditionError,
)


def describe_peer_error(err: Exception) -> str:
    """The informative line of a collective failure (TF puts a traceback around it)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "aborted by:" in line:
            reason = line.split("aborted by:", 1)[1].strip()
            if reason.endswith(":") and i + 1 < len(lines):
                reason = f"{reason} {lines[i + 1]}"
            return reason
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def lost_the_cluster(role: Role, err: Exception) -> ClusterError:
    """The one line for a collective operation that failed because a peer went away."""
    return ClusterError(
        f"{role.name} lost the other workers ({describe_peer_error(err)}). Start every "
        "worker again with the same command: training resumes after the last finished epoch."
    )


SETTING_SLOTS = 64
"""Settings compared one by one across the workers (the rest only as part of the whole)."""


def _digest(value: Any) -> int:
    """24 bits of a JSON value's SHA-256: exact in any numeric type a collective carries."""
    text = json.dumps(value, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:3], "big")


def agree_on_the_run(
    strategy: tf.distribute.Strategy,
    role: Role,
    settings: Mapping[str, Any],
    epochs: Collection[int],
) -> int:
    """Checks that every worker runs the same settings; returns the epoch they resume after.

    `settings` are this worker's (what must be the same everywhere); `epochs` are the
    finished epochs its backup can restore (0, the initial weights, among them). Workers
    started with different settings failed later, in a collective operation, with a
    traceback ("Shape mismatch in the collective instance"), or trained on silently and
    ended with different weights (a different learning rate); a backup one epoch ahead of
    the others made that worker read one epoch of data too few. One all-gather at the
    start tells every worker what all the others have, and every worker draws the same
    conclusion: the same error everywhere, or the oldest epoch any of them finished.
    """
    keys = sorted(settings)
    own = max(epochs, default=0)
    previous = max((epoch for epoch in epochs if epoch < own), default=0)
    row = [own, previous, _digest(dict(settings))]
    row += [_digest(settings[key]) for key in keys[:SETTING_SLOTS]]
    row += [0] * (3 + SETTING_SLOTS - len(row))

    @tf.function
    def gather() -> Any:
        def replica() -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            return context.all_gather(tf.constant([row], tf.int32), axis=0)

        return strategy.experimental_local_results(strategy.run(replica))[0]

    try:
        rows = gather().numpy().tolist()
    except PEER_ERRORS as err:
        raise lost_the_cluster(role, err) from err
    per_task = max(1, len(rows) // max(1, len(role.tasks)))
    names = [role.tasks[i // per_task][0] if role.tasks else str(i) for i in range(len(rows))]
    first = rows[0]
    for name, other in zip(names, rows, strict=True):
        if other[2] != first[2]:
            differ = [
                key for i, key in enumerate(keys[:SETTING_SLOTS]) if other[3 + i] != first[3 + i]
            ]
            raise UserError(
                "Every worker must run the same command (the same settings and tf-alexnet "
                "version; only TF_CONFIG and the data folders may differ). Received: "
                f"{name}'s settings differ from {names[0]}'s"
                + (f" in {', '.join(differ)}." if differ else ".")
            )
    agreed = min(other[0] for other in rows)
    behind = [
        name
        for name, other in zip(names, rows, strict=True)
        if agreed not in (0, other[0], other[1])
    ]
    if behind:
        raise UserError(
            f"Cannot resume: the workers' backups are more than one epoch apart (the oldest "
            f"is at epoch {agreed}; {', '.join(dict.fromkeys(behind))} cannot go back to it). "
            "Start the run again in a new run directory, or with --overwrite."
        )
    return int(agreed)
