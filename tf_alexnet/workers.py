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

from tf_alexnet.callbacks import save_weights
from tf_alexnet.cluster import Role
from tf_alexnet.config import TrainConfig
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir, check_resumable, refuse_unwritable

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
    refuse_unwritable(
        run.root, "The run directory", "Make it writable or choose another --run-dir."
    )
    if overwrite:
        return run  # its own folders are deleted once it holds its address: `clear_worker`
    if run.is_run():
        check_resumable(run, config)  # a run that finished no epoch: the chief starts it over
    if (run.workers / role.name / WORKER_WEIGHTS).is_file():
        raise UserError(
            f"{str(run.root)!r} holds a finished run of {role.name}. Pass --overwrite to "
            "replace it, or choose another --run-dir."
        )
    return run


def clear_worker(run: RunDir, role: Role) -> None:
    """`--overwrite` for a non-chief: deletes its own folders (backup and final weights).

    Call it once the strategy is made: this process then holds its `TF_CONFIG` address, so
    it is that task and no other process is. A second `worker-1 --overwrite` started beside
    a running one deleted the running one's backup, and only then failed on the port the
    first one holds; now it fails on the port first, having touched nothing.
    """
    for folder in (run.worker_backup(role.name), run.workers / role.name):
        shutil.rmtree(folder, ignore_errors=True)


def finish_worker(run: RunDir, model: keras.Model, role: Role) -> dict[str, Any]:
    """A non-chief keeps its final weights (to check the workers agree), nothing else."""
    folder = run.workers / role.name
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WORKER_WEIGHTS
    save_weights(model, weights)
    remove_if_empty(run.backup)
    print(f"Done: {role.name} finished; its final weights are in {weights}", flush=True)
    return {"role": role.name, "final_weights": str(weights)}


def remove_if_empty(folder: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not there, or not empty
        folder.rmdir()
