"""Errors meant for the person at the keyboard."""

import contextlib
import os
from collections.abc import Iterator


class UserError(ValueError):
    """A mistake in what the user asked for: the CLI prints its message as one line.

    Subclasses ValueError, so library callers can catch it like Keras's own argument errors.
    """


TENSORFLOW_MODULES = ("tensorflow", "keras", "tensorflow_datasets", "tensorflow_serving")
"""What the facade-only `api` image lacks: importing one of these there is a ModuleNotFoundError."""


def missing_tensorflow(err: ModuleNotFoundError) -> bool:
    """Whether `err` says that TensorFlow (or a package built on it) is not installed."""
    return (err.name or "").split(".")[0] in TENSORFLOW_MODULES


SERVE_EXTRA = "pip install 'tf-alexnet[serve]'"
"""What installs the serving facade's dependencies (FastAPI, uvicorn, ...)."""


class MissingServeExtra(ModuleNotFoundError):
    """The serving facade is used without the `serve` extra: says what to install.

    Raised on importing the serving package, and turned into one line by `tf-alexnet serve`.
    """

    def __init__(self, cause: ImportError | None = None) -> None:
        reason = f" ({cause})" if cause else ""
        super().__init__(
            f"Serving needs the 'serve' extra: {SERVE_EXTRA}{reason}.",
            name=cause.name if cause else None,
        )


class ClusterError(RuntimeError):
    """Multi-worker training lost a peer: the CLI prints one line and exits with status 1."""


class Terminated(BaseException):
    """SIGTERM (`docker stop`, Kubernetes): the command stops as Ctrl-C stops it.

    A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
    """


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Names `path` in a failed write's error when the writer did not (Keras's `.keras`
    zip, HDF5): a full disk during training said only "No space left on device.", or HDF5's
    two-line "Can't synchronously write data (file write failed: time = ...".
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, os.strerror(err.errno), os.fspath(path)) from err


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = False) -> None:
    """Writes `data` (text as UTF-8) to `path` through `<path>.tmp` and a rename: readers (and
    a kill) never see half a file, and a failed write (a full disk) names `path`, keeps the
    previous file and leaves no temp file. `durable` syncs the bytes to the disk first."""
    path = os.fspath(path)
    temp = path + ".tmp"
    try:
        with writing(path):  # a full disk: Python names no file
            with open(temp, "wb") as file:
                file.write(data.encode() if isinstance(data, str) else data)
                if durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
