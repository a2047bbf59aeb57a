"""Training: config -> strategy -> datasets -> compiled AlexNet -> `model.fit` -> run directory."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import statistics
import sys
import time
from typing import Any

import keras
import tensorflow as tf

from tf_alexnet import plots
from tf_alexnet.callbacks import (
    AtomicBackupAndRestore,
    BestModelCheckpoint,
    EpochTimer,
    SyncMovingStatistics,
    TrainingProgress,
)
from tf_alexnet.cluster import (
    PEER_ERRORS,
    SINGLE_PROCESS,
    Role,
    describe_peer_error,
    read_tf_config,
)
from tf_alexnet.config import TrainConfig
from tf_alexnet.data import Datasets, make_datasets
from tf_alexnet.errors import ClusterError, UserError
from tf_alexnet.model import AlexNet
from tf_alexnet.run_dir import RunDir, check_resumable, prepare
from tf_alexnet.saving import save_model_atomic
from tf_alexnet.strategy import Precision, make_strategy, set_mixed_precision, split_cpu

# A non-chief worker's final weights, in `workers/<task>-<index>/`.
WORKER_WEIGHTS = "final.weights.h5"


def compile_model(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    return model


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD with the configured momentum, decoupled weight decay and learning-rate schedule."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay or None,
    )


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The configured schedule, after `warmup_epochs` (at most half the run) of linear warm-up."""
    peak = config.learning_rate
    total = config.epochs * steps_per_epoch
    # At most half the run warms up, so a preset's warm-up still fits a short run.
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total // 2)
    schedule: Any = peak
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak,
            total - warmup,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    if config.schedule == "step":
        boundaries = list(range(config.step_epochs, config.epochs, config.step_epochs))
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [b * steps_per_epoch for b in boundaries],
            [peak * 0.1**i for i in range(len(boundaries) + 1)],
        )
    return WarmUp(schedule, warmup) if warmup else schedule


@keras.saving.register_keras_serializable(package="tf_alexnet")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 over `warmup_steps`, then `after` (a schedule or a number),
    counted from step 0 (so a step schedule's boundaries stay where they were configured)."""

    def __init__(self, after: Any, warmup_steps: int) -> None:
        self.after = after
        self.warmup_steps = warmup_steps

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        after = self.after(step) if callable(self.after) else keras.ops.cast(self.after, "float32")
        peak = self.after(0) if callable(self.after) else after
        ramp = peak * (step + 1) / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, ramp, after)

    def get_config(self) -> dict[str, Any]:
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WarmUp:
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["warmup_steps"])


def train(
    config: TrainConfig, run_dir: str | os.PathLike[str], overwrite: bool = False
) -> dict[str, Any]:
    """Trains `config` into `run_dir`, resuming an unfinished run there; returns its metrics.

    The run directory receives `config.json`, `best.keras` (best validation accuracy),
    `final.keras`, `history.csv`, `training_curves.png`, TensorBoard `logs/` and `metrics.json`.
    """
    multiworker = config.strategy == "multiworker"
    role = read_tf_config() if multiworker else SINGLE_PROCESS
    run = (
        prepare(run_dir, config, overwrite)
        if role.is_chief
        else _prepare_worker(run_dir, config, role, overwrite)
    )
    backup = run.worker_backup(role.name) if multiworker else run.backup
    split_cpu(config.cpu_devices)
    # Before anything else touches TensorFlow: MultiWorkerMirroredStrategy configures the
    # runtime's collective operations, which is refused once the runtime is initialized.
    strategy = make_strategy(config.strategy, config.collective_timeout)
    precision = set_mixed_precision(config.mixed_precision)
    policy = precision.policy
    print(f"Precision: {policy} ({precision.reason})", flush=True)
    keras.utils.set_random_seed(config.seed)
    replicas = strategy.num_replicas_in_sync
    if config.jit_compile and replicas > 1 and not tf.config.list_logical_devices("GPU"):
        # TF 2.21: XLA under a multi-CPU MirroredStrategy reads variables across devices.
        raise UserError("jit_compile is not supported with MirroredStrategy over CPU devices.")
    # The global batch spans all replicas of all workers. Every worker builds the same
    # global-batch pipeline; Keras distributes it with the dataset's DATA auto-shard
    # policy (see data.py), so worker i takes every i-th slice of each global batch. The
    # workers must then see the examples in the same order: no non-deterministic map.
    global_batch = config.batch_size * replicas
    pipeline = config.pipeline_spec(global_batch)
    if multiworker:
        pipeline = dataclasses.replace(pipeline, deterministic=True)
    datasets = make_datasets(config.data_spec(), pipeline)
    steps_per_epoch = datasets.num_train // global_batch

    with strategy.scope():
        model = AlexNet(
            input_shape=config.input_shape,
            classes=len(datasets.class_names),
            dropout=config.dropout,
            variant=config.variant,
        )
        compile_model(model, config, steps_per_epoch)

    if role.is_chief:  # data and model are valid: record the run
        run.write_json(run.config, config.to_dict())
    history_before = run.read_history()
    print(
        f"Training {config.variant} AlexNet ({model.count_params():,} parameters) on "
        f"{datasets.num_train:,} images ({datasets.num_validation:,} for validation), "
        f"{replicas} replica(s)"
        + (f" on {role.num_workers} workers (this is {role.name})" if multiworker else "")
        + f", global batch {global_batch}, policy {policy}"
        + (f", resuming after epoch {resumed}" if (resumed := run.finished_epochs(backup)) else "")
        + f" -> {run.root}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        model.fit(
            datasets.train,
            validation_data=datasets.validation,
            epochs=config.epochs,
            shuffle=False,  # the dataset shuffles examples itself
            callbacks=_callbacks(config, run, backup, history_before, role),
            verbose=1 if sys.stdout.isatty() else 2,
        )
    except PEER_ERRORS as err:
        if not multiworker:
            raise
        raise ClusterError(
            f"{role.name} lost the other workers ({describe_peer_error(err)}). Start every "
            "worker again with the same command: training resumes after the last finished "
            "epoch."
        ) from err
    wall_seconds = time.perf_counter() - start
    if not role.is_chief:
        return _finish_worker(run, model, role)
    save_model_atomic(model, run.final_model)
    metrics = _finish(run, model, config, datasets, replicas, global_batch, precision, wall_seconds)
    if multiworker:
        _remove_if_empty(run.backup)  # each worker deleted its own backup folder
    return metrics


def _prepare_worker(
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
        check_resumable(run, config)
    if (own[1] / WORKER_WEIGHTS).is_file():
        raise UserError(
            f"{str(run.root)!r} holds a finished run of {role.name}. Pass --overwrite to "
            "replace it, or choose another --run-dir."
        )
    return run


def _finish_worker(run: RunDir, model: keras.Model, role: Role) -> dict[str, Any]:
    """A non-chief keeps its final weights (to check the workers agree), nothing else."""
    folder = run.workers / role.name
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WORKER_WEIGHTS
    model.save_weights(str(weights), overwrite=True)
    _remove_if_empty(run.backup)
    print(f"Done: {role.name} finished; its final weights are in {weights}", flush=True)
    return {"role": role.name, "final_weights": str(weights)}


def _remove_if_empty(folder: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not there, or not empty
        folder.rmdir()


def _callbacks(
    config: TrainConfig,
    run: RunDir,
    backup: pathlib.Path,
    history: list[dict[str, float]],
    role: Role,
) -> list[keras.callbacks.Callback]:
    # Only the chief writes the run's files: the others keep just their own backup. (Keras
    # 3 saves from each worker's local copy of the mirrored variables, with no collective
    # operation, so the chief saves alone without the others taking part.)
    # Callbacks that change training run on every worker, from the same (all-reduced) logs.
    shared: list[keras.callbacks.Callback] = [
        SyncMovingStatistics(),  # first: what follows saves or evaluates the statistics
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.schedule == "plateau":
        shared.insert(
            1, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=2)
        )
    # Last, so an epoch counts as done only once everything before has recorded it.
    backup_callback = AtomicBackupAndRestore(str(backup))
    if not role.is_chief:
        return [*shared, backup_callback]
    # A resumed run: only a better model may replace best.keras.
    best = max((row.get("val_accuracy", float("-inf")) for row in history), default=float("-inf"))
    return [
        EpochTimer(),
        TrainingProgress(config.batch_size),
        *shared,
        BestModelCheckpoint(run.best_model, monitor="val_accuracy", best=best),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        keras.callbacks.TensorBoard(str(run.logs)),
        backup_callback,
    ]


def _finish(
    run: RunDir,
    model: keras.Model,
    config: TrainConfig,
    datasets: Datasets,
    replicas: int,
    global_batch: int,
    precision: Precision,
    wall_seconds: float,
) -> dict[str, Any]:
    history = run.read_history()
    plots.training_curves(history, run.curves)
    best = max(history, key=lambda row: row.get("val_accuracy", float("-inf")))
    last = history[-1]
    images_per_epoch = (datasets.num_train // global_batch) * global_batch
    rates = [images_per_epoch / row["train_seconds"] for row in history if row.get("train_seconds")]
    metrics = {
        "variant": config.variant,
        "input_shape": list(config.input_shape),
        "parameters": model.count_params(),
        "epochs": len(history),
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_accuracy": best.get("val_accuracy"),
        "final": {
            k: last[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in last
        },
        "train_images_per_second_median": statistics.median(rates) if rates else None,
        "wall_seconds_last_session": wall_seconds,
        "replicas": replicas,
        "global_batch_size": global_batch,
        "dtype_policy": precision.policy,
        "mixed_precision": {"requested": precision.mode, "reason": precision.reason},
        "num_train": datasets.num_train,
        "num_validation": datasets.num_validation,
        "class_names": list(datasets.class_names),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    run.write_json(run.metrics, metrics)
    print(
        f"Done: best val_accuracy {metrics['best_val_accuracy']:.4f} at epoch "
        f"{metrics['best_epoch']}; models in {run.root}",
        flush=True,
    )
    return metrics
