"""A non-chief worker's share of the run directory in multi-worker training.

The chief writes the run's files; every other worker keeps only its own resume checkpoint
(`backup/<task>-<index>/`) and, at the end, its final weights (`workers/<task>-<index>/`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from typing import Any

import keras

from tf_alexnet.cluster import Role
from tf_alexnet.config import TrainConfig
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir, check_resumable

WORKER_WEIGHTS = "final.weights.h5"
"""A non-chief worker's final weights, in `workers/<task>-<index>/`."""


def prepare_worker(
    run_dir: str | os.PathLike[str], config: TrainConfig, role: Role, overwrite: bool
) -> RunDir:
    """A non-chief worker's view of the run directory, checked like the chief's.

    The worker writes only `backup/<task>-<index>/` and `workers/<task>-<index>/`: on
    storage shared with the chief, the chief's files are there too, and only the chief
    deletes them (`--overwrite`).
    """
    run = RunDir(pathlib.Path(run_dir))
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"The run directory {str(run.root)!r} is a file.")
    own = [run.worker_backup(role.name), run.workers / role.name]
    if overwrite:
        for folder in own:
            shutil.rmtree(folder, ignore_errors=True)
    if run.is_run() and not overwrite:
        check_resumable(run, config)  # a run that finished no epoch: the chief starts it over
    if (own[1] / WORKER_WEIGHTS).is_file():
        raise UserError(
            f"{str(run.root)!r} holds a finished run of {role.name}. Pass --overwrite to "
            "replace it, or choose another --run-dir."
        )
    return run


def finish_worker(run: RunDir, model: keras.Model, role: Role) -> dict[str, Any]:
    """A non-chief keeps its final weights (to check the workers agree), nothing else."""
    folder = run.workers / role.name
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WORKER_WEIGHTS
    model.save_weights(str(weights), overwrite=True)
    remove_if_empty(run.backup)
    print(f"Done: {role.name} finished; its final weights are in {weights}", flush=True)
    return {"role": role.name, "final_weights": str(weights)}


def remove_if_empty(folder: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not there, or not empty
        folder.rmdir()
