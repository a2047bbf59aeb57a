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


class ClusterError(RuntimeError):
    """Multi-worker training lost a peer: the CLI prints one line and exits with status 1."""


class Terminated(BaseException):
    """SIGTERM (`docker stop`, Kubernetes): the command stops as Ctrl-C stops it.

    A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
    """
