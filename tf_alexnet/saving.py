"""Loading tf_alexnet models."""

from __future__ import annotations

import os

import keras

from tf_alexnet.errors import UserError


def load_model(path: str | os.PathLike[str], compile: bool = True) -> keras.Model:
    """Loads a tf_alexnet `.keras` file (custom layers are registered by this package)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"No model file at {path!r}.")
    if not path.endswith(".keras"):
        raise UserError(f"Expected a `.keras` model file. Received: {path!r}")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError) as err:
        raise UserError(f"Could not load the model {path!r}: {err}") from err
