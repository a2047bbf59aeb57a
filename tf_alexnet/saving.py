"""Loading tf_alexnet models."""

from __future__ import annotations

import os
import pathlib
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.files import sync, writing


def load_model(
    path: str | os.PathLike[str],
    compile: bool = True,
    *,
    custom_objects: dict[str, Any] | None = None,
    safe_mode: bool = True,
) -> keras.Model:
    """Loads a tf_alexnet `.keras` file (custom layers are registered by this package).

    Args:
        path: the `.keras` file.
        compile: whether to restore the optimizer, loss and metrics.
        custom_objects: as in `keras.saving.load_model`: your own objects in the file (a
            new head's custom layer, say) that are not registered with Keras.
        safe_mode: as in `keras.saving.load_model`: `False` loads `Lambda` layers holding
            Python lambdas, for files you trust.
    """
    if not isinstance(path, str | os.PathLike):
        raise UserError(
            f"`load_model` expects the path of a `.keras` file. Received: path={path!r}"
        )
    for name, flag in (("compile", compile), ("safe_mode", safe_mode)):
        if not isinstance(flag, bool | np.bool_):  # "no" or "False" would mean True
            raise UserError(f"`{name}` should be True or False. Received: {name}={flag!r}")
    if custom_objects is not None and not isinstance(custom_objects, Mapping):
        raise UserError(
            "`custom_objects` should be None or a dict of your own classes and functions by "
            "name, such as {'MyLayer': MyLayer}. "
            f"Received: custom_objects={custom_objects!r}"
        )
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(
            f"`load_model` expects a `.keras` file, and {path!r} is a folder{folder_hint(path)}"
        )
    if not os.path.isfile(path):
        raise UserError(f"No model file at {path!r}.")
    if not path.endswith(".keras"):
        raise UserError(f"Expected a `.keras` model file. Received: {path!r}")
    not_keras = UserError(
        f"{path!r} is not a `.keras` file (a zip archive) saved by Keras: it is damaged, "
        "truncated, or another kind of file."
    )
    try:  # not a zip: Keras itself says "File not found"; no config.json: a raw KeyError
        with zipfile.ZipFile(path) as archive:
            has_config = "config.json" in archive.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        raise not_keras from err
    if not has_config:
        raise not_keras
    try:
        model = keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except zipfile.BadZipFile as err:  # a damaged member
        raise not_keras from err
    except TypeError as err:
        # Keras saves a compiled model's optimizer as its backend's own class: a file saved
        # under KERAS_BACKEND=torch names keras.src.backend.torch.optimizers..., which
        # another backend cannot import (keras-team/keras: optimizers are backend classes).
        if compile and "keras.src.backend." in str(err):
            raise _other_backend_optimizer(path, " ".join(str(err).split())[:300]) from err
        raise UserError(f"Could not load the model {path!r}: {err}") from err
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"Could not load the model {path!r}: {err}") from err
    # Where that backend is installed too, its optimizer loads, and `fit` fails obscurely
    # ("expected Tensor as element 0 in argument 0, but got ResourceVariable").
    module = type(getattr(model, "optimizer", None)).__module__.split(".")
    if module[:3] == ["keras", "src", "backend"] and module[3] != keras.backend.backend():
        raise _other_backend_optimizer(path, f"an optimizer of the {module[3]} backend")
    return model


RUN_MODELS = (contract.RUN_BEST_MODEL, contract.RUN_FINAL_MODEL)
"""A training run's models, best first (`tf_alexnet.run_dir.RunDir.model_path`)."""


def folder_hint(path: str) -> str:
    """What to pass instead of folder `path`: a run directory's model file, or, for an
    exported SavedModel, the loader that reads it. Ends a message (with its full stop)."""
    for name in RUN_MODELS:
        if os.path.isfile(os.path.join(path, name)):
            return f": a training run, whose model is {os.path.join(path, name)!r}."
    try:
        entries = os.listdir(path)
    except OSError:  # unreadable: nothing more to say
        return "."
    if "saved_model.pb" in entries or any(
        entry.isdigit() and os.path.isfile(os.path.join(path, entry, "saved_model.pb"))
        for entry in entries
    ):
        return (
            ": an exported SavedModel, which loads with `tf_alexnet.load_exported` (or "
            "`keras.layers.TFSMLayer`), not as a Keras model."
        )
    return "."


def _other_backend_optimizer(path: str, received: str) -> UserError:
    return UserError(
        f"Could not load the optimizer saved in {path!r}: it belongs to another Keras backend "
        f"than this one ({keras.backend.backend()}). Load the model with compile=False and "
        f"compile it again. Received: {received}"
    )


_TEMP_SUFFIX = ".tmp.keras"
_TEMP_NAME = re.compile(r"\.(?P<name>.+\.keras)\.(?P<pid>\d+)" + re.escape(_TEMP_SUFFIX))
"""`save_model_atomic` writes `NAME.keras` as `.NAME.keras.<pid>.tmp.keras`, then renames it."""


def save_model_atomic(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Saves a `.keras` file so that a reader (or a kill) never sees half of it.

    A SIGKILL during the save leaves the temp file: `remove_stale_temps` deletes it later. The
    file is synced to the disk before the rename and the rename after it: a rename can reach the
    disk before the data, and a power loss could leave an empty or cut-short `best.keras`.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.{os.getpid()}{_TEMP_SUFFIX}")
    try:
        with writing(path):
            model.save(temp)
            sync(temp)
            os.replace(temp, path)
            sync(directory or ".")
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def remove_stale_temps(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Deletes the temp files that killed `save_model_atomic` calls left in `directory`.

    A temp file is stale when the process named in it (by pid) no longer runs; returns the
    files deleted. Training calls it on its run directory, which it holds alone.
    """
    removed = []
    for path in sorted(pathlib.Path(directory).glob(".*" + _TEMP_SUFFIX)):
        match = _TEMP_NAME.fullmatch(path.name)
        if not match or not path.is_file() or process_running(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def process_running(pid: int) -> bool:
    """Whether process `pid` exists on this host (another user's counts too): the writer of a
    temp file or folder named after it may still be writing."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
