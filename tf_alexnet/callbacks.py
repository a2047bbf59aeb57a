"""Training callbacks: backups and checkpoints that survive a kill, epoch timing, synced statistics.

The progress and estimate callback is in `tf_alexnet.progress`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_alexnet.errors import UserError
from tf_alexnet.files import write_atomic, writing
from tf_alexnet.interrupts import raise_if_signalled
from tf_alexnet.saving import save_model_atomic


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup is never half-written, and agreed on by all workers.

    Keras 3.15 overwrites its weights and metadata files in place: a SIGKILL during the
    write leaves a truncated HDF5 file and the run cannot resume (our resume test caught
    it). Here every save writes a new weights file, then atomically replaces the metadata
    that names it, then deletes the weights older than the previous epoch's. It relies on
    the parent's bookkeeping (`_current_epoch`, `_last_batch_seen`) and on
    `model._initial_epoch`, the hook Keras itself uses to resume;
    `tests/tf_alexnet/test_train.py::test_resume_after_sigkill` guards both.

    Under a multi-worker strategy each worker keeps its own backup, and a kill can land
    between two workers' saves of the same epoch, leaving one worker an epoch ahead. The
    workers therefore agree on the oldest epoch any of them has before training starts
    (`tf_alexnet.cluster.agree_on_the_run`, whose answer is `resume_epoch`), and a worker
    that is ahead restores the previous epoch's weights, which it keeps for this reason.
    Mirrored weights stay identical across workers.

    The backup outlives `fit`: Keras deletes it in `on_train_end`, and a kill between that
    and the writing of the run's last files (`final.keras`, `metrics.json`) left a run that
    the same command trained again from its first epoch. The caller deletes it with
    `remove_backup` once those are written; a run resumed with every epoch finished trains
    no epoch and only writes them.
    """

    def __init__(self, backup_dir: str, resume_epoch: int | None = None) -> None:
        super().__init__(backup_dir)
        self.resume_epoch = resume_epoch

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._load_model()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        pass  # kept until the run's files are written: see `remove_backup`

    def _read_metadata(self) -> dict[str, Any] | None:
        return _read_metadata(self.backup_dir)

    def _load_model(self) -> None:
        generations = backup_generations(self.backup_dir)
        own = max(generations)
        epoch = own if self.resume_epoch is None else self.resume_epoch
        if epoch not in generations:
            raise UserError(
                f"Cannot resume: another worker's backup is at epoch {epoch}, this worker's "
                f"({self.backup_dir}) at {own}. Start the run again in a new run directory."
            )
        weights = generations[epoch]
        if weights is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        path = os.path.join(self.backup_dir, weights)
        try:
            with _with_current_layer_names(path) as readable:
                self.model.load_weights(readable)
        except (ValueError, OSError) as err:
            found = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"Cannot resume from the backup {path!r} (epoch {epoch}): its weights do not "
                f"fit this version's network ({found}). Finish the run with the tf_alexnet "
                "version that started it, or pass --overwrite to train it anew (its best.keras "
                "still evaluates, exports and predicts)."
            ) from None
        self.model._initial_epoch = epoch

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        weights = f"epoch{self._current_epoch}-batch{self._last_batch_seen}.weights.h5"
        save_weights(self.model, os.path.join(self.backup_dir, weights))
        old = self._read_metadata()
        previous = (
            {"epoch": old["epoch"], "weights": old["weights"]}
            if old and old["epoch"] < self._current_epoch
            else None
        )
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": weights,
            "previous": previous,
        }
        try:
            write_atomic(self._training_metadata_path, json.dumps(metadata), durable=True)
        except OSError:  # a full disk: the last backup stays as it was
            named = {old["weights"], (old.get("previous") or {}).get("weights")} if old else set()
            if weights not in named:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.backup_dir, weights))
            raise
        keep = {weights, previous["weights"] if previous else None}
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name not in keep:
                os.remove(os.path.join(self.backup_dir, name))


class HistoryLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` whose failed write names `history.csv`: a full disk at an epoch's end said
    only "No space left on device." (the row is flushed from a buffer, which names no file)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with writing(self.filename):
            super().on_epoch_end(epoch, logs)


def save_weights(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """`model.save_weights(path)`, written by Python: a failed write (a full disk) raises
    one clean `OSError` naming `path` and leaves no half-written file.

    HDF5 writing to the disk itself keeps a file whose write failed open, and flushes it
    again when it is finally closed: at the interpreter's exit, where on a full disk the
    process died of a segmentation fault (status 139) after its one-line error. Here HDF5
    writes into memory, and Python copies the bytes to the file.
    """
    data = _weights_in_memory(model)
    with writing(path):
        if data is None:  # Keras moved its weights store: let it write the file itself
            model.save_weights(os.fspath(path), overwrite=True)
            return
        try:
            with open(path, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(path)
            raise


def _weights_in_memory(model: keras.Model) -> bytes | None:
    """The bytes of `model.save_weights`'s `.weights.h5` file, or None if this Keras has no
    `saving_lib.H5IOStore` over a memory buffer (Keras 3.15's `save_weights_only`)."""
    try:
        from keras.src.saving import saving_lib

        buffer = io.BytesIO()
        store = saving_lib.H5IOStore(buffer, mode="w")
        save_state = saving_lib._save_state
    except (ImportError, AttributeError, TypeError):
        return None
    try:
        save_state(
            model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
        )
    finally:
        store.close()
    return buffer.getvalue()


def _read_metadata(backup_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        metadata: dict[str, Any] = json.load(file)
    return metadata


def backup_generations(backup_dir: str | os.PathLike[str]) -> dict[int, str | None]:
    """The finished epochs a backup can restore -> their weights file (0: the initial
    weights, None): its last epoch and the one before it."""
    generations: dict[int, str | None] = {0: None}
    metadata = _read_metadata(backup_dir)
    if metadata is not None:
        previous = metadata.get("previous")
        if previous:
            generations[previous["epoch"]] = previous["weights"]
        generations[metadata["epoch"]] = metadata["weights"]
    return generations


OLDER_LAYER_NAMES = {"batch_normalization": "fused_batch_normalization"}
"""Weights-file groups renamed since: `mini` normalized with Keras's `BatchNormalization` before
it used `FusedBatchNormalization` (same weights), and a weights file names each layer's group
after its class."""


@contextlib.contextmanager
def _with_current_layer_names(path: str) -> Any:
    """`path`, or a copy of it whose layer groups are renamed as this version's layers are
    (`OLDER_LAYER_NAMES`): a backup written before the rename then resumes."""
    import tempfile

    import h5py  # type: ignore[import-untyped]

    try:
        with h5py.File(path, "r") as file:
            layers = set(file["layers"]) if "layers" in file else set()
    except OSError:  # not an HDF5 file: Keras's load says so
        layers = set()
    renames = {
        name: new + name[len(old) :]
        for name in layers
        for old, new in OLDER_LAYER_NAMES.items()
        if name == old or (name.startswith(old + "_") and name[len(old) + 1 :].isdigit())
    }
    if not renames or layers & set(renames.values()):
        yield path
        return
    with tempfile.TemporaryDirectory() as folder:
        copy = os.path.join(folder, os.path.basename(path))
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as file:
            for name, new_name in renames.items():
                file["layers"].move(name, new_name)
        yield copy


def remove_backup(backup_dir: str | os.PathLike[str]) -> None:
    """Deletes a finished run's backup folder (`AtomicBackupAndRestore` leaves it).

    The metadata goes first: a kill in the middle leaves either a whole backup or weights
    files without metadata, which a resumed run ignores (no backup: nothing to resume).
    """
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if os.path.exists(metadata):
        os.remove(metadata)
    shutil.rmtree(backup_dir, ignore_errors=True)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Validation and the epoch's checkpoints see the optimizer's moving average of the weights.

    For an optimizer with `use_ema=True`. Keras's `SwapEMAWeights(swap_on_epoch=True)` leaves
    the average in the model until the next epoch begins, so a resume backup saved at the
    epoch's end would hold the weights swapped and a resumed run would train on from the
    average. Here the average goes in at the epoch's end (place this before the checkpoints)
    and the raw weights come back in `restore_raw()`, a callback to place just before the
    backup. After the last epoch `fit` itself writes the average into the model.
    """

    def __init__(self) -> None:
        super().__init__(swap_on_epoch=False)  # validation: the parent's on_test_begin/end
        self._ema_weights_in_model: bool = False  # the parent's flag: is the average in?

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._use_average(True)

    def restore_raw(self) -> keras.callbacks.Callback:
        """The callback that puts the raw weights back at the epoch's end."""
        return keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: self._use_average(False)
        )

    def _use_average(self, average: bool) -> None:
        if self._ema_weights_in_model != average:
            self._swap_variables()
            self._ema_weights_in_model = average


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


class TrainingDiverged(UserError):
    """The loss stopped being a finite number: the settings (most often too high a learning
    rate) made training diverge. The CLI prints it as one line."""


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is not finite, before its epoch counts.

    Keras's `TerminateOnNaN` stops after that batch, but the epoch then ends as usual: its NaN
    weights are backed up (a resumed run starts from them), its row is logged, and the run is
    reported as finished, exported and served with NaN scores. Raising `TrainingDiverged`
    here leaves the run at its last finished epoch instead.

    Args:
        learning_rate: the run's (peak) learning rate, for the message.
    """

    def __init__(self, learning_rate: float) -> None:
        super().__init__()
        self.learning_rate = learning_rate
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(np.asarray(loss))):
            return
        # A run with a finished epoch refuses another learning rate unless started over.
        where = (
            "with --overwrite, or into another --run-dir"
            if self._epoch
            else "into the same --run-dir: it finished no epoch, so it starts over"
        )
        raise TrainingDiverged(
            f"Training diverged: the loss became {float(np.asarray(loss))} in epoch "
            f"{self._epoch + 1}, batch {batch + 1}. Nothing of that epoch was kept. Train "
            f"again with a lower learning rate (--learning-rate, now {self.learning_rate:g}) "
            f"{where}."
        )


class StopWhenSignalled(keras.callbacks.Callback):
    """Raises the stop SIGTERM or Ctrl-C asked for after each batch, in case its first raise
    was swallowed (a signal handled inside a finalizer: see `tf_alexnet.interrupts`)."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_signalled()

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_signalled()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_signalled()


class ReseedEachEpoch(keras.callbacks.Callback):
    """Starts every random layer's stream (dropout masks) afresh at each epoch, from the
    layer's own seed and the epoch's number: a resumed run draws what an uninterrupted one
    would have drawn.

    Keras keeps these streams' state in `SeedGenerator` variables that `BackupAndRestore`
    does not restore, so a run resumed at epoch `k` replayed epoch 1's masks there (the data
    side is `PipelineSpec.epochs`).

    Args:
        stride: epoch `e` of a layer seeded `s` draws from seed `s + e * stride`.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self._streams: list[tuple[Any, int]] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The layers' seeds, as built: the run's seed decides them.
        self._streams = [
            (variable, int(np.asarray(variable.value)[0]))
            for variable in self.model.non_trainable_variables
            if variable.path.endswith("seed_generator_state")
        ]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for variable, seed in self._streams:
            variable.assign(np.array([seed + epoch * self.stride, 0], variable.dtype))


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


class SyncMovingStatistics(keras.callbacks.Callback):
    """Averages the replicas' floating-point non-trainable weights before they are used.

    Keras 3 creates BatchNormalization's moving mean and variance with aggregation "none":
    under a multi-replica strategy each replica updates its own copy from its own share of
    the batch, so the copies drift apart (the two-worker test caught it; the trainable
    weights stay identical, their gradients being all-reduced). Moving averages are linear
    in their updates, so one all-reduce MEAN before validation and at the end of each
    epoch gives the same statistics as averaging at every step, at almost no cost. Integer
    state (random seeds) is left alone. The averaging is traced once per model: a function
    traced afresh at each sync made TensorFlow warn of retracing from the third epoch on.
    """

    def __init__(self) -> None:
        super().__init__()
        self._average: Any = None  # the model's traced averaging, built at its first sync

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._average = None

    def _sync(self) -> None:
        if self._average is None:
            self._average = self._averaging()
        self._average()

    def _averaging(self) -> Any:
        """The model's averaging as one traced function (a no-op on one replica)."""
        strategy = self.model.distribute_strategy
        variables = [v for v in self.model.non_trainable_variables if "float" in str(v.dtype)]
        if strategy.num_replicas_in_sync == 1 or not variables:
            return lambda: None

        def average() -> None:
            # The mean of every replica's copy, then that value into every copy.
            means = strategy.run(
                lambda: tf.distribute.get_replica_context().all_reduce(
                    "MEAN", [tf.identity(v.value) for v in variables]
                )
            )
            for variable, mean in zip(variables, means, strict=True):
                variable.assign(strategy.experimental_local_results(mean)[0])

        return tf.function(average)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._sync()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._sync()
