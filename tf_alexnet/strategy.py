"""Device setup and the `tf.distribute` strategy factory."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import keras
import tensorflow as tf

from tf_alexnet.errors import UserError
from tf_alexnet.hardware import Bf16Support, bf16_support


def split_cpu(devices: int) -> None:
    """Splits the CPU into `devices` logical devices (to run MirroredStrategy on a CPU).

    Must run before TensorFlow initializes its devices.
    """
    if devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    config = [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    try:
        tf.config.set_logical_device_configuration(cpu, config)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != devices:
            raise UserError(
                f"Cannot split the CPU into {devices} devices: TensorFlow is already "
                "initialized. Set cpu_devices before anything else runs."
            ) from None


def make_strategy(name: str = "auto", collective_timeout: float = 300.0) -> tf.distribute.Strategy:
    """Returns the strategy for `name`.

    - `auto`: MirroredStrategy over all GPUs when there are several, the GPU when there is
      one, TensorFlow's default strategy (one device) otherwise.
    - `default`: the default strategy (no distribution).
    - `one-device`: OneDeviceStrategy on the first GPU, else the CPU.
    - `mirrored`: MirroredStrategy over all GPUs, else over all logical CPU devices
      (see `split_cpu`).
    - `multiworker`: MultiWorkerMirroredStrategy over the `TF_CONFIG` cluster, its
      collectives bounded by `collective_timeout` seconds (see `tf_alexnet.cluster`).
      Create it before anything else uses TensorFlow.
    """
    if name == "multiworker":  # first: listing logical devices initializes the runtime
        from tf_alexnet.cluster import multi_worker_strategy, read_tf_config

        # a clear message for a missing or malformed TF_CONFIG
        return multi_worker_strategy(collective_timeout, read_tf_config())
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) > 1:
            return mirrored_strategy()
        name = "one-device" if gpus else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return mirrored_strategy()
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return mirrored_strategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    raise UserError(f"Unknown strategy {name!r}.")


_MIRRORED_STRATEGIES = itertools.count(1)
COLLECTIVE_KEYS_PER_STRATEGY = 100_000


def mirrored_strategy(devices: Any = None, cross_device_ops: Any = None) -> tf.distribute.Strategy:
    """`tf.distribute.MirroredStrategy(devices, cross_device_ops)` with collective keys of its own.

    TensorFlow numbers every MirroredStrategy's collective ops from the same keys, so in one
    process a second strategy that all-reduces other shapes than the first (another model, say)
    fails with "Shape mismatch in the collective instance 100" (tensorflow/tensorflow#62790).
    Each strategy made here starts its keys past the last one's, as TensorFlow's own tests do.
    """
    cls = tf.distribute.MirroredStrategy
    default = cls._collective_key_base
    cls._collective_key_base = next(_MIRRORED_STRATEGIES) * COLLECTIVE_KEYS_PER_STRATEGY
    try:
        return cls(devices, cross_device_ops=cross_device_ops)
    finally:
        cls._collective_key_base = default


@dataclasses.dataclass(frozen=True)
class Precision:
    """The dtype policy chosen for a `mixed_precision` mode, and why."""

    mode: str  # what was asked: off, bf16, fp16 or auto
    policy: str  # Keras's global policy: float32, mixed_bfloat16 or mixed_float16
    reason: str


def choose_precision(mode: str, bf16: Bf16Support | None = None) -> Precision:
    """The policy for `mode`; `auto` picks by hardware.

    `auto`: bf16 on GPUs of compute capability >= 8.0, fp16 on 7.x; on a CPU (no GPU), bf16
    where the CPU's bf16 units beat float32 (AMX; AVX512-BF16 on AMD Zen 4 and newer: see
    `tf_alexnet.hardware`), float32 elsewhere. An explicit mode always wins; fp16 needs a GPU of
    capability >= 7.0. An explicit bf16 on a CPU without bf16 units says it will be slow.
    """
    gpus = tf.config.list_physical_devices("GPU")
    capability = min(
        (
            tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in gpus
        ),
        default=None,
    )
    policies = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    if mode == "auto":
        if capability is not None:
            chosen = "bf16" if capability >= (8, 0) else "fp16" if capability >= (7, 0) else "off"
            reason = f"auto: GPU compute capability {capability[0]}.{capability[1]}"
        else:
            support = bf16 or bf16_support()
            chosen = "bf16" if support.available else "off"
            reason = f"auto: {support.reason}"
        return Precision(mode, policies[chosen], reason)
    if mode == "fp16" and (capability is None or capability < (7, 0)):
        raise UserError(
            "mixed_precision='fp16' needs a GPU with compute capability >= 7.0 "
            "(use 'bf16' on CPUs)."
        )
    if mode not in policies:
        raise UserError(
            f"`mixed_precision` should be one of off, bf16, fp16, auto. Received: {mode!r}"
        )
    reason = f"{mode}: set explicitly"
    if mode == "bf16" and capability is None and not (support := bf16 or bf16_support()).available:
        # TensorFlow says only "oneDNN supports DT_BFLOAT16 only on platforms with AVX-512".
        reason += f"; {support.reason}, so bf16 runs slower than float32 here"
    return Precision(mode, policies[mode], reason)


def set_mixed_precision(mode: str, bf16: Bf16Support | None = None) -> Precision:
    """Sets Keras's global dtype policy for `mode` (see `choose_precision`); returns the choice."""
    precision = choose_precision(mode, bf16)
    keras.mixed_precision.set_global_policy(precision.policy)
    return precision
