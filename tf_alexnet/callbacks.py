"""Training callbacks whose files survive a kill at any instant."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import keras

from tf_alexnet.saving import save_model_atomic


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is never half-written.

    Keras 3.15 overwrites its weights and metadata files in place: a SIGKILL during the
    write leaves a truncated HDF5 file and the run cannot resume (our resume test caught
    it). Here every save writes a new weights file, then atomically replaces the metadata
    that names it, then deletes the older weights. It relies on the parent's bookkeeping
    (`_current_epoch`, `_last_batch_seen`) and on `model._initial_epoch`, the hook Keras
    itself uses to resume; `tests/test_train.py::test_resume_after_sigkill` guards both.
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._load_model()

    def _load_model(self) -> None:
        metadata_path = self._training_metadata_path
        if not os.path.exists(metadata_path):
            return
        with open(metadata_path) as file:
            metadata = json.load(file)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
        self.model._initial_epoch = metadata["epoch"]

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        weights = f"epoch{self._current_epoch}-batch{self._last_batch_seen}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, weights), overwrite=True)
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": weights,
        }
        temp = self._training_metadata_path + ".tmp"
        with open(temp, "w") as file:
            json.dump(metadata, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self._training_metadata_path)
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights:
                os.remove(os.path.join(self.backup_dir, name))


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever `monitor` improves (higher is better), atomically.

    Args:
        path: the `.keras` file.
        monitor: the metric in the epoch logs.
        best: the best value so far (when resuming a run).
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str, best: float = float("-inf")):
        super().__init__()
        self.path = os.fspath(path)
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            save_model_atomic(self.model, self.path)


class EpochTimer(keras.callbacks.Callback):
    """Adds `train_seconds` (the epoch's training part, validation excluded) to the logs."""

    def __init__(self) -> None:
        super().__init__()
        self._start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        end = self._train_end or time.perf_counter()
        if logs is not None:
            logs["train_seconds"] = end - self._start
