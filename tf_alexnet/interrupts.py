"""Ctrl-C and SIGTERM while a command runs: raised in the main thread, and never lost.

Python runs a signal's handler in the main thread between two bytecodes. When that happens
inside a finalizer (a `__del__`, a `weakref.finalize`, multiprocessing's pool clean-up), the
handler's exception is printed as "Exception ignored in ..." and dropped: a worker sent
SIGTERM trained on to the end. So each signal is also recorded here, and training checks the
record after every batch (`raise_if_signalled`, called by `callbacks.StopWhenSignalled`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from tf_alexnet.errors import Terminated

INTERRUPT_REPLACED = "REPLACED BY KeyboardInterrupt"
"""What pybind11 says when Ctrl-C lands inside C++ that was raising another error (seen from
`tf.saved_model.load` in an export's validation): "MISMATCH of original and normalized active
exception types: ORIGINAL InvalidArgumentError REPLACED BY KeyboardInterrupt"."""


class _Received:
    """The stop a signal asked for while `stop_on_signals` was active, if any."""

    error: type[BaseException] | None = None


_received = _Received()


def signalled() -> type[BaseException] | None:
    """`KeyboardInterrupt` or `Terminated` once SIGINT or SIGTERM came, else None."""
    return _received.error


def raise_if_signalled() -> None:
    """Raises the stop a signal asked for, even if its first raise was swallowed."""
    if _received.error is not None:
        raise _received.error


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM raises `Terminated` and SIGINT raises KeyboardInterrupt while the block runs, and
    both are recorded (`signalled`).

    Without a handler, SIGTERM kills the process outright, and a process that is PID 1 in a
    container ignores it (`docker stop` then waits 10 s and kills). While `serve` serves,
    uvicorn's handlers stand over these: it shuts down gracefully, then raises the signal
    again, and the command ends here too. A SIGINT handler other than Python's own (ignored in
    a background job, a caller's own) is left alone. Only the main thread can set handlers:
    elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.error = None

    def stop(signum: int, frame: Any) -> None:
        _received.error = Terminated
        raise Terminated

    def interrupt(signum: int, frame: Any) -> None:
        _received.error = KeyboardInterrupt
        signal.default_int_handler(signum, frame)

    previous_sigterm = signal.signal(signal.SIGTERM, stop)
    own_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own_sigint:
        signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if own_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _received.error = None


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether `err` is Ctrl-C's doing: a SIGINT came while the command ran (the error a
    library made of the KeyboardInterrupt, e.g. TensorFlow's "ImportError: initialization
    failed" when it lands in a module's initialization), or `err` or an error it came from is
    a KeyboardInterrupt, or says it replaced one."""
    if _received.error is KeyboardInterrupt:
        return True
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, KeyboardInterrupt) or INTERRUPT_REPLACED in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
