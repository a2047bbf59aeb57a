"""Loading tf_alexnet models."""

from __future__ import annotations

import os
import zipfile

import keras

from tf_alexnet.errors import UserError


def load_model(path: str | os.PathLike[str], compile: bool = True) -> keras.Model:
    """Loads a tf_alexnet `.keras` file (custom layers are registered by this package)."""
    if not isinstance(path, str | os.PathLike):
        raise UserError(
            f"`load_model` expects the path of a `.keras` file. Received: path={path!r}"
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"No model file at {path!r}.")
    if not path.endswith(".keras"):
        raise UserError(f"Expected a `.keras` model file. Received: {path!r}")
    if not zipfile.is_zipfile(path):  # Keras itself says "File not found" for it
        raise UserError(
            f"{path!r} is not a `.keras` file (a zip archive) saved by Keras: it is damaged, "
            "truncated, or another kind of file."
        )
    try:
        return keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError) as err:
        raise UserError(f"Could not load the model {path!r}: {err}") from err


def save_model_atomic(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Saves a `.keras` file so that a reader (or a kill) never sees half of it."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp.keras")
    try:
        model.save(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
