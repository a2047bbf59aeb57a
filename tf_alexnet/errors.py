"""Errors meant for the person at the keyboard."""


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
