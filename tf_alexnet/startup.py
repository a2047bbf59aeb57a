"""Starting TensorFlow without its C++ start-up noise (pure Python until `start_tensorflow`).

On a machine without a GPU, `import tensorflow` and the first device query print lines such as
"Could not find cuda drivers on your machine", "failed call to cuInit", oneDNN and
CPU-instruction notices, some of them before TensorFlow's own log level applies. The command
line starts TensorFlow through `start_tensorflow`, which sets `TF_CPP_MIN_LOG_LEVEL=2` (unless
the user set it) and drops exactly those lines from the C-level stderr; anything else is
passed through. Setting `TF_CPP_MIN_LOG_LEVEL` to 0 or 1 yourself turns the filter off (2 and
3 keep it: some of the lines ignore the level). It also turns on oneDNN's CPU kernels where
TensorFlow leaves them off (`prefer_onednn`) and gives TensorFlow a memory pool where oneDNN
stays off (`prefer_memory_pool`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping

from tf_alexnet import hardware
from tf_alexnet.errors import UserError

LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
KERAS_BACKEND = "KERAS_BACKEND"
MEMORY_POOL = "TF_CPU_ALLOCATOR_USE_BFC"

NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_dnn|cuda_fft|cuda_blas|"
    r"cuda_executor|cpu_feature_guard|port)\.cc:\d+\] .*"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\."
)
"""TensorFlow's start-up lines on a CPU-only machine (each matches one whole line)."""

_USER_LEVEL = os.environ.get(LOG_LEVEL)


def quiet() -> bool:
    """Whether start-up noise is filtered: yes, unless the user asked TensorFlow for info or
    warnings (`TF_CPP_MIN_LOG_LEVEL` 0 or 1). A user's 2 or 3 asks for less: TensorFlow prints
    some of these lines whatever the level (before its logging starts), so they stay filtered."""
    return _USER_LEVEL is None or _USER_LEVEL.strip() not in {"0", "1"}


def set_log_level() -> None:
    """TensorFlow's C++ log level 2 (errors only) unless the user chose one; before TF starts."""
    os.environ.setdefault(LOG_LEVEL, "2")


@contextlib.contextmanager
def filtered_stderr(pattern: re.Pattern[str] = NOISE) -> Iterator[None]:
    """Captures file descriptor 2 and writes back every line that is not `pattern`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not pattern.fullmatch(line.rstrip("\n")):
                    sys.stderr.write(line)
            sys.stderr.flush()


def keras_on_tensorflow() -> str | None:
    """Makes Keras run on TensorFlow, as the commands need (they train, export and serve with
    it), whatever `KERAS_BACKEND` says; before Keras is imported. Returns the other backend
    the user had set, to be told, or None."""
    asked = os.environ.get(KERAS_BACKEND)
    os.environ[KERAS_BACKEND] = "tensorflow"
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != "tensorflow":  # called from Python
        raise UserError(
            "The tf-alexnet commands run Keras on TensorFlow, and this process imported Keras "
            f"on {keras.backend.backend()!r}. Run them in a process of their own."
        )
    return asked if asked and asked != "tensorflow" else None


def prefer_onednn(env: MutableMapping[str, str] | None = None) -> None:
    """Turns on oneDNN, TensorFlow's fast CPU kernels, on x86 CPUs unless the user chose
    (`TF_ENABLE_ONEDNN_OPTS`); before TensorFlow is imported.

    TensorFlow 2.21 turns them on by itself only where the CPU has AVX512_VNNI, AVX512_BF16,
    AVX_VNNI or AMX, and runs Eigen's kernels elsewhere. On an AVX2-only AMD EPYC, oneDNN trained
    d2l 1.4x and `mini` 1.5x as fast as Eigen (docs/benchmarks/train_throughput_amd-avx2.md);
    on the other CPUs this changes nothing. `TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen. Serving
    does not call it: there, one-image calls took longer with oneDNN
    (docs/benchmarks/onednn_serving_amd-avx2.md).
    """
    if hardware.on_x86():
        (os.environ if env is None else env).setdefault(ONEDNN, "1")


def prefer_memory_pool(env: MutableMapping[str, str] | None = None) -> bool:
    """Gives TensorFlow a memory pool for CPU tensors (its BFC allocator,
    `TF_CPU_ALLOCATOR_USE_BFC=true`) on x86 CPUs where oneDNN, which brings a pool of its own,
    stays off, unless the user chose; before TensorFlow is imported. Returns whether it did.

    Without a pool TensorFlow allocates with malloc, which maps each large tensor anew and has
    the kernel zero-fill it on every call. Serving on an AVX2-only AMD EPYC, the pool answered
    3-9% more d2l images/s at concurrency 32 (docs/benchmarks/facade_cost_allocator_amd-avx2.md)
    and shrank 25-megapixel uploads twice as fast, where malloc ran past the deadline
    (facade_memory_allocators_amd-avx2.md). Like oneDNN's pool on the other CPUs, it keeps its
    peak for reuse; `TF_CPU_ALLOCATOR_USE_BFC=false` gives memory back to the system instead.
    """
    env = os.environ if env is None else env
    if MEMORY_POOL in env or not hardware.on_x86():
        return False
    if hardware.onednn_expected(env=env):
        return False  # oneDNN's own pool; TensorFlow's would replace it
    env[MEMORY_POOL] = "true"
    return True


def memory_pool() -> str:
    """Where this process's TensorFlow takes CPU tensors' memory from, after it started:
    `tensorflow-bfc` (`TF_CPU_ALLOCATOR_USE_BFC`), `onednn` (oneDNN's pool) or `malloc`."""
    import tensorflow as tf

    try:  # only pooling allocators keep statistics
        tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:
        return "malloc"
    return "tensorflow-bfc" if hardware.env_flag(os.environ.get(MEMORY_POOL)) else "onednn"


def onednn_in_use() -> bool | None:
    """Whether this process's TensorFlow runs oneDNN's CPU kernels (None: it cannot say)."""
    try:  # TensorFlow's own answer, from its private utilities: not kept across versions
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


class KerasGroupedConvRetracing(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function conv.<locals>._conv_xla>
    triggered tf.function retracing" warnings.

    On a CPU, Keras runs a grouped convolution (the paper variant's conv2, conv4 and conv5)
    through a `tf.function` it makes anew on every call, so tracing a paper model a few times
    (export traces each signature) warned four times about code that is Keras's, not the
    user's. Other retracing warnings pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("_conv_xla" in message and "triggered tf.function retracing" in message)


def prefer_cpu_settings(onednn: bool = True) -> None:
    """The environment the commands start TensorFlow in: oneDNN's kernels where TensorFlow
    leaves them off (unless `onednn` is False: then TensorFlow's own choice) and a memory pool
    where oneDNN stays off; the user's own settings win. Before TensorFlow is imported."""
    if onednn:
        prefer_onednn()
    prefer_memory_pool()


def start_tensorflow(onednn: bool = True) -> None:
    """Imports TensorFlow in the commands' environment (`prefer_cpu_settings`) and probes its
    devices (where the noise is printed), quietly. TensorFlow's Python logger drops Keras's
    grouped-convolution retracing warnings."""
    set_log_level()
    prefer_cpu_settings(onednn)
    with filtered_stderr() if quiet() else contextlib.nullcontext():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, KerasGroupedConvRetracing) for f in tf_logger.filters):
        tf_logger.addFilter(KerasGroupedConvRetracing())
