"""What this CPU offers for bf16 math, read without importing TensorFlow.

Intel's AMX tiles (`amx_bf16`) run bfloat16 matrix products about twice as fast as float32
through oneDNN. Without them bf16 is slower than float32: emulated on AVX2-only CPUs (AMD EPYC,
older Xeons), and even with AVX512-BF16 (`avx512_bf16`, e.g. a Xeon whose VM hides AMX) it
measured 0.54x float32 for training and 0.66x for inference (docs/precision.md). `bf16_support`
says which case this is, and why, so `mixed_precision="auto"` and the serving fast path can
choose by themselves.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

BF16_FLAGS = ("amx_bf16",)
"""`/proc/cpuinfo` flags of the units that make bf16 faster than float32 (AMX)."""

SLOW_BF16_FLAGS = ("avx512_bf16",)
"""bf16 instructions that exist but, without AMX, run slower than float32 (measured)."""

ONEDNN_ISAS_WITHOUT_AMX = frozenset(
    {
        "SSE41",
        "AVX",
        "AVX2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX10_1_512",
    }
)
"""`ONEDNN_MAX_CPU_ISA` caps below AVX512_CORE_AMX: oneDNN then leaves the AMX tiles idle."""


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its instruction-set flags."""

    model: str
    flags: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 runs faster than float32 here, and the reason in words."""

    available: bool
    reason: str


def read_cpu_info(path: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's model name and flags (empty where the file does not exist)."""
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError:
        return CpuInfo(model="unknown", flags=frozenset())
    model, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags)


def bf16_support(cpu: CpuInfo | None = None, env: Mapping[str, str] | None = None) -> Bf16Support:
    """Whether this CPU has bf16 matrix units that oneDNN (TensorFlow's CPU kernels) will use.

    Args:
        cpu: the CPU to judge; default: this machine's (`read_cpu_info()`).
        env: the environment TensorFlow runs in; default: `os.environ`. oneDNN is off with
            `TF_ENABLE_ONEDNN_OPTS=0` and capped below bf16 by `ONEDNN_MAX_CPU_ISA=AVX2` etc.
    """
    cpu = cpu or read_cpu_info()
    env = os.environ if env is None else env
    units = [flag for flag in BF16_FLAGS if flag in cpu.flags]
    if not units:
        slow = [flag for flag in SLOW_BF16_FLAGS if flag in cpu.flags]
        if slow:
            return Bf16Support(
                False,
                f"the CPU ({cpu.model}) has {'+'.join(slow)} but no AMX ({BF16_FLAGS[0]}), "
                "and bf16 without AMX runs slower than float32",
            )
        return Bf16Support(False, f"the CPU ({cpu.model}) has no {' or '.join(BF16_FLAGS)} units")
    found = "+".join(units)
    if env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in {"0", "false", "off"}:
        return Bf16Support(
            False, f"the CPU has {found} but TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off"
        )
    cap = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap in ONEDNN_ISAS_WITHOUT_AMX:
        return Bf16Support(False, f"the CPU has {found} but ONEDNN_MAX_CPU_ISA={cap} hides them")
    return Bf16Support(True, f"the CPU ({cpu.model}) has {found} units")


BF16_REWRITE_MODES = ("auto", "on", "off")


def enable_bf16_rewrite(mode: str = "auto", support: Bf16Support | None = None) -> Bf16Support:
    """Lets TensorFlow run float32 graphs in bf16 on the CPU's bf16 units (inference only).

    Turns on grappler's `auto_mixed_precision_onednn_bfloat16` rewrite, which converts the
    float32 ops of a loaded SavedModel that oneDNN runs faster in bf16 (convolutions, matrix
    products) and keeps the rest in float32. Call it before the model's functions first run.

    Args:
        mode: `auto` (where `bf16_support()` says the units exist), `on` or `off`.
        support: the hardware verdict; default: this machine's.

    Returns:
        Whether the rewrite is on, and why.
    """
    if mode not in BF16_REWRITE_MODES:
        raise ValueError(
            f"`mode` should be one of {', '.join(BF16_REWRITE_MODES)}. Received: mode={mode!r}"
        )
    if mode == "off":
        verdict = Bf16Support(False, "off: set explicitly")
    elif mode == "on":
        verdict = Bf16Support(True, "on: set explicitly")
    else:
        found = support or bf16_support()
        verdict = Bf16Support(found.available, f"auto: {found.reason}")
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options(
        {"auto_mixed_precision_onednn_bfloat16": verdict.available}
    )
    return verdict
