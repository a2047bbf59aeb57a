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

import dataclasses
import json
import os
import re
from collections.abc import Mapping

import tensorflow as tf

from tf_alexnet.errors import UserError
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
    return Role(task_type, index, num_workers, is_chief)


def multi_worker_strategy(timeout_seconds: float) -> tf.distribute.MultiWorkerMirroredStrategy:
    """`MultiWorkerMirroredStrategy` for the `TF_CONFIG` cluster.

    A peer that dies is noticed by the heartbeats of TensorFlow's coordination service
    (within about 10 s), which aborts the collectives of the survivors. `timeout_seconds`
    also bounds every collective operation (the all-reduce of gradients and metrics), so a
    peer that hangs without dying fails the step too instead of stalling it forever (0
    disables it). It must exceed the longest time one worker can run ahead of the others,
    e.g. while the chief plots and saves at the end of training. TensorFlow watches each
    timed collective with a thread: a small cost next to an AlexNet step.
    """
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cls = (
        KerasCompatibleMultiWorkerStrategy
        if needs_keras_20585_workaround()
        else tf.distribute.MultiWorkerMirroredStrategy
    )
    return cls(cluster_resolver=resolver, communication_options=options)


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
