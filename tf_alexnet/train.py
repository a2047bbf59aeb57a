"""Training: config -> strategy -> datasets -> compiled AlexNet -> `model.fit` -> run directory."""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

import keras
import tensorflow as tf

from tf_alexnet import plots
from tf_alexnet.callbacks import AtomicBackupAndRestore, BestModelCheckpoint, EpochTimer
from tf_alexnet.config import TrainConfig
from tf_alexnet.data import Datasets, make_datasets
from tf_alexnet.errors import UserError
from tf_alexnet.model import AlexNet
from tf_alexnet.run_dir import RunDir, prepare
from tf_alexnet.saving import save_model_atomic
from tf_alexnet.strategy import make_strategy, set_mixed_precision, split_cpu


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
    """The configured schedule, after `warmup_epochs` of linear warm-up from 0."""
    peak = config.learning_rate
    warmup = round(config.warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch
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
    run = prepare(run_dir, config, overwrite)
    split_cpu(config.cpu_devices)
    policy = set_mixed_precision(config.mixed_precision)
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.jit_compile and replicas > 1 and not tf.config.list_logical_devices("GPU"):
        # TF 2.21: XLA under a multi-CPU MirroredStrategy reads variables across devices.
        raise UserError("jit_compile is not supported with MirroredStrategy over CPU devices.")
    global_batch = config.batch_size * replicas
    datasets = make_datasets(config.data_spec(), config.pipeline_spec(global_batch))
    steps_per_epoch = datasets.num_train // global_batch

    with strategy.scope():
        model = AlexNet(
            input_shape=config.input_shape,
            classes=len(datasets.class_names),
            dropout=config.dropout,
            variant=config.variant,
        )
        compile_model(model, config, steps_per_epoch)

    run.write_json(run.config, config.to_dict())  # data and model are valid: record the run
    history_before = run.read_history()
    print(
        f"Training {config.variant} AlexNet ({model.count_params():,} parameters) on "
        f"{datasets.num_train:,} images ({datasets.num_validation:,} for validation), "
        f"{replicas} replica(s), global batch {global_batch}, policy {policy}"
        + (f", resuming after epoch {resumed}" if (resumed := run.finished_epochs()) else "")
        + f" -> {run.root}",
        flush=True,
    )
    start = time.perf_counter()
    model.fit(
        datasets.train,
        validation_data=datasets.validation,
        epochs=config.epochs,
        shuffle=False,  # the dataset shuffles examples itself
        callbacks=_callbacks(config, run, history_before),
        verbose=1 if sys.stdout.isatty() else 2,
    )
    wall_seconds = time.perf_counter() - start
    save_model_atomic(model, run.final_model)
    return _finish(run, model, config, datasets, replicas, global_batch, policy, wall_seconds)


def _callbacks(
    config: TrainConfig, run: RunDir, history: list[dict[str, float]]
) -> list[keras.callbacks.Callback]:
    # A resumed run: only a better model may replace best.keras.
    best = max((row.get("val_accuracy", float("-inf")) for row in history), default=float("-inf"))
    callbacks = [
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
        BestModelCheckpoint(run.best_model, monitor="val_accuracy", best=best),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        keras.callbacks.TensorBoard(str(run.logs)),
        # Last, so an epoch counts as done only once everything above has recorded it.
        AtomicBackupAndRestore(str(run.backup)),
    ]
    if config.schedule == "plateau":
        callbacks.insert(
            0, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=2)
        )
    return callbacks


def _finish(
    run: RunDir,
    model: keras.Model,
    config: TrainConfig,
    datasets: Datasets,
    replicas: int,
    global_batch: int,
    policy: str,
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
        "dtype_policy": policy,
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
