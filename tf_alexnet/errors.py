"""Errors meant for the person at the keyboard."""


class UserError(ValueError):
    """A mistake in what the user asked for: the CLI prints its message as one line.

    Subclasses ValueError, so library callers can catch it like Keras's own argument errors.
    """


class ClusterError(RuntimeError):
    """Multi-worker training lost a peer: the CLI prints one line and exits with status 1."""
