"""What this CPU offers for bf16 math, read without importing TensorFlow.

bf16 beats float32 through oneDNN (TensorFlow's CPU kernels) only where the CPU runs bf16 dot
products at least twice as fast as float32 ones. Measured on these machines (docs/precision.md):

- Intel AMX tiles (`amx_bf16`): training about 2x float32, serving 2.4x;
- AMD Zen 4 and newer (`cpu family` 25+) with AVX512-BF16 (`avx512_bf16`): Zen 5 training
  1.7x float32, serving 1.6x; Zen 4 (256-bit data paths) training 1.8-2.0x, serving 1.9x;
- an Intel Xeon with AVX512-BF16 but no AMX (a VM hiding it): training 0.54x, serving 0.56x;
- AVX2-only CPUs (older AMD EPYC and Xeons) have no bf16 units: bf16 is emulated, 0.7-0.8x.

`bf16_support` says which case this is, and why, so `mixed_precision="auto"` and the serving
fast path can choose by themselves. AVX512-BF16 on CPUs not listed (Intel Cooper Lake) is not
measured here and keeps float32; an explicit choice always wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import platform
from collections.abc import Iterator, Mapping

AMX_FLAG = "amx_bf16"
"""Intel's bf16 matrix tiles: bf16 faster than float32 wherever they are."""

AVX512_BF16_FLAG = "avx512_bf16"
"""bf16 dot-product instructions: faster than float32 only on the CPUs below."""

FAST_AVX512_BF16_VENDORS = {"AuthenticAMD": 25}
"""Per `vendor_id`, the first `cpu family` whose AVX512-BF16 beat float32 (measured: AMD Zen 4
and Zen 5; AMD family 25 without AVX512-BF16 is Zen 3, which the flag check already leaves out)."""

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

ONEDNN_ISAS_WITHOUT_AVX512_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)
"""`ONEDNN_MAX_CPU_ISA` caps below AVX512_CORE_BF16: oneDNN then emulates bf16."""


ONEDNN_DEFAULT_FLAGS = frozenset(
    {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
)
"""The CPU flags on which TensorFlow 2.21 (Linux, x86) runs oneDNN's kernels without being asked;
elsewhere it runs Eigen's, unless `TF_ENABLE_ONEDNN_OPTS` says otherwise."""


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, instruction-set flags, vendor and family (`/proc/cpuinfo`)."""

    model: str
    flags: frozenset[str]
    vendor: str = "unknown"
    family: int | None = None


@dataclasses.dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 runs faster than float32 here, and the reason in words."""

    available: bool
    reason: str


def read_cpu_info(path: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's model name, flags, vendor and family (`unknown` without the file)."""
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError:
        return CpuInfo(model="unknown", flags=frozenset())
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    family = fields.get("cpu family", "")
    return CpuInfo(
        model=fields.get("model name", "unknown"),
        flags=frozenset(fields.get("flags", "").split()),
        vendor=fields.get("vendor_id", "unknown"),
        family=int(family) if family.isdigit() else None,
    )


def _fast_units(cpu: CpuInfo) -> tuple[str, frozenset[str]] | str:
    """The bf16 units that beat float32 on `cpu` and the oneDNN caps that idle them, or why not."""
    if AMX_FLAG in cpu.flags:
        return f"{AMX_FLAG} units", ONEDNN_ISAS_WITHOUT_AMX
    if AVX512_BF16_FLAG not in cpu.flags:
        return f"the CPU ({cpu.model}) has no {AMX_FLAG} or {AVX512_BF16_FLAG} units"
    first_fast = FAST_AVX512_BF16_VENDORS.get(cpu.vendor)
    if first_fast is not None and cpu.family is not None and cpu.family >= first_fast:
        units = f"{AVX512_BF16_FLAG} units ({cpu.vendor} cpu family {cpu.family})"
        return units, ONEDNN_ISAS_WITHOUT_AVX512_BF16
    return (
        f"the CPU ({cpu.model}) has {AVX512_BF16_FLAG} but no AMX ({AMX_FLAG}); bf16 beats "
        "float32 with AVX512-BF16 alone only on AMD Zen 4 and newer (cpu family 25+), and "
        "measured slower than float32 on a Xeon without AMX"
    )


def bf16_support(cpu: CpuInfo | None = None, env: Mapping[str, str] | None = None) -> Bf16Support:
    """Whether this CPU has bf16 units that oneDNN (TensorFlow's CPU kernels) runs faster than fp32.

    Args:
        cpu: the CPU to judge; default: this machine's (`read_cpu_info()`).
        env: the environment TensorFlow runs in; default: `os.environ`. oneDNN is off with
            `TF_ENABLE_ONEDNN_OPTS=0` and capped below bf16 by `ONEDNN_MAX_CPU_ISA=AVX2` etc.
    """
    cpu = cpu or read_cpu_info()
    env = os.environ if env is None else env
    found = _fast_units(cpu)
    if isinstance(found, str):
        return Bf16Support(False, found)
    units, idling_caps = found
    if env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in {"0", "false", "off"}:
        return Bf16Support(
            False, f"the CPU has {units} but TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off"
        )
    cap = env.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap in idling_caps:
        return Bf16Support(False, f"the CPU has {units} but ONEDNN_MAX_CPU_ISA={cap} hides them")
    return Bf16Support(True, f"the CPU ({cpu.model}) has {units}")


def on_x86() -> bool:
    """Whether this machine is x86-64, the CPUs whose kernels and allocators are measured here."""
    return platform.machine().lower() in {"x86_64", "amd64"}


def env_flag(value: str | None) -> bool | None:
    """A boolean environment variable as TensorFlow reads it (`1`/`true`, `0`/`false`, any
    case); None when unset or unreadable (TensorFlow then keeps its default)."""
    word = (value or "").strip().lower()
    return True if word in {"1", "true"} else False if word in {"0", "false"} else None


def onednn_expected(cpu: CpuInfo | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether TensorFlow will run oneDNN's CPU kernels: what `TF_ENABLE_ONEDNN_OPTS` says, else
    TensorFlow's own rule (x86 CPUs with a flag of `ONEDNN_DEFAULT_FLAGS`); before it starts.

    Args:
        cpu: the CPU to judge; default: this machine's (`read_cpu_info()`).
        env: the environment TensorFlow starts in; default: `os.environ`.
    """
    env = os.environ if env is None else env
    chosen = env_flag(env.get("TF_ENABLE_ONEDNN_OPTS"))
    if chosen is not None:
        return chosen
    if not on_x86():
        return False
    return bool((cpu or read_cpu_info()).flags & ONEDNN_DEFAULT_FLAGS)


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


@contextlib.contextmanager
def without_bf16_rewrite() -> Iterator[None]:
    """TensorFlow functions first run inside keep float32 (export's checks compare float32
    graphs), whatever `enable_bf16_rewrite` set for this process; restored on the way out."""
    import tensorflow as tf

    option = "auto_mixed_precision_onednn_bfloat16"
    before = bool(tf.config.optimizer.get_experimental_options().get(option, False))
    tf.config.optimizer.set_experimental_options({option: False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({option: before})
