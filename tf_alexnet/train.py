"""Training: config -> strategy -> datasets -> compiled AlexNet -> `model.fit` -> run directory."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_alexnet import plots, startup
from tf_alexnet._version import __version__
from tf_alexnet.callbacks import (
    AtomicBackupAndRestore,
    AveragedWeights,
    BestModelCheckpoint,
    EpochTimer,
    HistoryLogger,
    ReseedEachEpoch,
    StopOnDivergence,
    StopWhenSignalled,
    SyncMovingStatistics,
    backup_generations,
    remove_backup,
)
from tf_alexnet.cluster import (
    PEER_ERRORS,
    SINGLE_PROCESS,
    Role,
    agree_on_the_run,
    lost_the_cluster,
    read_tf_config,
)
from tf_alexnet.config import TrainConfig
from tf_alexnet.data import Datasets, make_datasets
from tf_alexnet.errors import UserError
from tf_alexnet.model import AlexNet
from tf_alexnet.optim import compile_model
from tf_alexnet.pipeline import EPOCH_SEED_STRIDE, device_datasets_without_autotune
from tf_alexnet.progress import TrainingProgress, progress_interval
from tf_alexnet.run_dir import RunDir, in_use_by_this_process, prepare
from tf_alexnet.saving import save_model_atomic
from tf_alexnet.sources import in_colour, skipped_notice
from tf_alexnet.strategy import Precision, make_strategy, set_mixed_precision, split_cpu
from tf_alexnet.workers import (
    WORKER_WEIGHTS,
    clear_worker,
    finish_worker,
    prepare_worker,
    remove_if_empty,
)

__all__ = ["WORKER_WEIGHTS", "train"]


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains `config` into `run_dir`, resuming an unfinished run there; returns its metrics.

    `callbacks` are extra Keras callbacks, run on every worker after the project's own
    training callbacks and before the checkpoints, so what they add to an epoch's logs is
    recorded in `history.csv`.

    The run directory receives `config.json`, `classes.json` (the class names, from the
    start), `image_listing.json` (for an image folder: the images the splits are drawn from),
    `best.keras` (best validation accuracy; none when `validation_fraction` is 0),
    `final.keras`, `history.csv`, `training_curves.png`, TensorBoard `logs/` and
    `metrics.json`.

    Keras's global dtype policy follows `config.mixed_precision` during the run and is put back
    as it was afterwards, so the caller's later models are not built in bf16 by surprise.
    """
    config = config.with_absolute_paths()  # config.json then reads from any directory
    progress_interval()  # a wrong $TF_ALEXNET_PROGRESS_SECONDS is said before any file is written
    previous_policy = keras.mixed_precision.global_policy()
    role = read_tf_config() if config.strategy == "multiworker" else SINGLE_PROCESS
    try:
        # Workers keep their own files; the chief's process holds the run directory.
        with in_use_by_this_process(run_dir) if role.is_chief else contextlib.nullcontext():
            return _train(config, run_dir, overwrite, callbacks, role)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    overwrite: bool,
    callbacks: Sequence[keras.callbacks.Callback],
    role: Role,
) -> dict[str, Any]:
    """`train`, with Keras's global dtype policy left set to the run's; `role` is this
    process's place in the cluster (the single process's, without one)."""
    multiworker = config.strategy == "multiworker"
    run = (
        prepare(run_dir, config, overwrite)
        if role.is_chief
        else prepare_worker(run_dir, config, role, overwrite)
    )
    backup = run.worker_backup(role.name) if multiworker else run.backup
    split_cpu(config.cpu_devices)
    # Before anything else touches TensorFlow: MultiWorkerMirroredStrategy configures the
    # runtime's collective operations, which is refused once the runtime is initialized.
    strategy = make_strategy(config.strategy, config.collective_timeout)
    if overwrite and not role.is_chief:  # now that this process is the task it names
        clear_worker(run, role)
    # The finished epochs to resume after: under multiworker, the oldest any worker's
    # backup has, once every worker is known to run the same settings.
    generations = backup_generations(backup)
    resumed = (
        agree_on_the_run(strategy, role, _shared_settings(config), generations)
        if multiworker
        else max(generations)
    )
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
    # policy (see pipeline.py), so worker i takes every i-th slice of each global batch. The
    # workers must then see the examples in the same order: no non-deterministic map.
    global_batch = config.batch_size * replicas
    pipeline = config.pipeline_spec(global_batch, replicas=replicas)
    if multiworker:
        # One step per execution: Keras's loop over several steps fails under a multi-worker
        # strategy in TF 2.21 ("You must feed a value for placeholder tensor
        # 'while/cond/Placeholder_1'": the distributed iterator's end-of-data check inside
        # the loop all-reduces across the workers).
        pipeline = dataclasses.replace(pipeline, deterministic=True, steps_per_execution=1)
        if config.steps_per_execution > 1:
            print(
                f"Note: 1 step per execution rather than {config.steps_per_execution}: "
                "multi-worker training runs one step at a time (several steps per execution "
                "fail under TensorFlow 2.21's MultiWorkerMirroredStrategy).",
                flush=True,
            )
    # One dataset of the epochs left, each drawn from its own number: a resumed run sees
    # the same images, in the same order and augmentation, as an uninterrupted one.
    pipeline = dataclasses.replace(pipeline, epochs=(resumed, config.epochs))
    datasets = make_datasets(config.data_spec(), pipeline)
    # Again: building a TFDS dataset (the first run of a fresh data folder) draws from Python's
    # random state, and that run started from other weights than every later one.
    keras.utils.set_random_seed(config.seed)
    if role.is_chief and run.has_progress() and (changed := run.listing_changed(datasets.listing)):
        raise UserError(
            f"The image folder {config.image_folder!r} has changed since the run "
            f"{str(run.root)!r} started ({changed}): its validation split would be drawn anew, "
            "and the run would go on training on images it validated on. Put the folder back "
            "as it was, or pass --overwrite to start the run over (or choose another --run-dir)."
        )
    if notice := skipped_notice(datasets.skipped):
        print(notice, flush=True)
    for note in datasets.absent_notes(("training", "validation")):
        print(note, flush=True)
    if config.train_examples and config.train_examples > datasets.num_train:
        print(
            f"Note: train_examples {config.train_examples:,} is more than the "
            f"{datasets.num_train:,} training images the splits leave; training on all of them.",
            flush=True,
        )
    if config.channels == 1 and in_colour(datasets.files):
        print(
            "Note: the images are in colour and the model reads them in gray (channels 1); "
            "pass --channels 3 to keep the colour.",
            flush=True,
        )
    steps_per_epoch, per_execution = datasets.steps_per_epoch, datasets.steps_per_execution
    dropped = datasets.num_train // global_batch - steps_per_epoch
    asked = pipeline.steps_per_execution
    if per_execution != asked or dropped:
        print(
            f"Note: {per_execution} steps per execution"
            + (f" rather than {asked}" if per_execution != asked else "")
            + f", so that each epoch's {steps_per_epoch:,} steps are whole executions"
            + (f" (the last {dropped} batch(es) of each epoch dropped)." if dropped else "."),
            flush=True,
        )

    try:
        with strategy.scope():  # under multiworker, the chief broadcasts the initial weights
            model = AlexNet(
                input_shape=config.input_shape,
                classes=len(datasets.class_names),
                dropout=config.dropout,
                variant=config.variant,
                width=config.width,
                test_time_flip=config.test_time_flip,
            )
            compile_model(model, config, steps_per_epoch, per_execution)
    except PEER_ERRORS as err:
        if not multiworker:
            raise
        raise lost_the_cluster(role, err) from err

    if role.is_chief:  # data and model are valid: record the run
        run.write_json(run.config, config.to_dict())
        if datasets.listing:
            run.write_json(run.listing, datasets.listing)
        run.write_json(run.classes, {"class_names": list(datasets.class_names)})
        # Rows of epochs the backup had not recorded when the run was killed: replayed now.
        run.truncate_history(resumed)
        # An evaluation of the model so far (a killed run's): training replaces that model.
        for stale in (run.evaluation, run.confusion_matrix):
            stale.unlink(missing_ok=True)
    history_before = run.read_history()
    print(
        f"Training {config.variant} AlexNet ("
        + (f"width {config.width:g}, " if config.width != 1 else "")
        + ("test-time flips, " if config.test_time_flip else "")
        + f"{model.count_params():,} parameters, "
        + "x".join(map(str, config.input_shape))
        + " inputs) on "
        f"{datasets.num_train:,} training images ("
        + (
            f"{datasets.num_validation:,} more for validation"
            if datasets.validated
            else "no validation split: the final model is the run's model"
        )
        + "), "
        f"{replicas} replica(s)"
        + (f" on {role.num_workers} workers (this is {role.name})" if multiworker else "")
        + f", global batch {global_batch}, policy {policy}"
        + (f", resuming after epoch {resumed}" if resumed else "")
        + f" -> {run.root}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        with datasets.reading(), device_datasets_without_autotune():
            model.fit(
                datasets.train,
                validation_data=datasets.validation,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,  # and one iterator for all the epochs
                shuffle=False,  # the dataset shuffles examples itself
                callbacks=_callbacks(
                    config,
                    run,
                    backup,
                    history_before,
                    role,
                    callbacks,
                    datasets.validated,
                    resumed,
                ),
                verbose=1 if sys.stdout.isatty() else 2,
            )
    except PEER_ERRORS as err:
        if not multiworker:
            raise
        raise lost_the_cluster(role, err) from err
    wall_seconds = time.perf_counter() - start
    # The backup goes last: until then a kill leaves a run that resumes after its last epoch
    # and only writes what is missing.
    if not role.is_chief:
        result = finish_worker(run, model, role)
        remove_backup(backup)
        remove_if_empty(run.backup)
        return result
    save_model_atomic(model, run.final_model)
    metrics = _finish(run, model, config, datasets, replicas, global_batch, precision, wall_seconds)
    remove_backup(backup)
    if multiworker:
        remove_if_empty(run.backup)  # each worker deletes its own backup folder
    return metrics


def _callbacks(
    config: TrainConfig,
    run: RunDir,
    backup: pathlib.Path,
    history: list[dict[str, float]],
    role: Role,
    extra: Sequence[keras.callbacks.Callback] = (),
    validated: bool = True,
    resumed: int | None = None,
) -> list[keras.callbacks.Callback]:
    # Only the chief writes the run's files: the others keep just their own backup. (Keras
    # 3 saves from each worker's local copy of the mirrored variables, with no collective
    # operation, so the chief saves alone without the others taking part.)
    # Callbacks that change training run on every worker, from the same (all-reduced) logs.
    shared: list[keras.callbacks.Callback] = [
        StopWhenSignalled(),  # first: no later callback records an epoch a signal stopped
        SyncMovingStatistics(),  # first: what follows saves or evaluates the statistics
        ReseedEachEpoch(EPOCH_SEED_STRIDE),
        StopOnDivergence(config.learning_rate),
        *extra,
    ]
    if config.schedule == "plateau":
        shared.insert(
            1, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=2)
        )
    # Last, so an epoch counts as done only once everything before has recorded it, and with
    # the raw weights (not their average) in the model.
    last: list[keras.callbacks.Callback] = [AtomicBackupAndRestore(str(backup), resumed)]
    if config.ema_momentum:  # on every worker: they validate the same (averaged) weights
        averaged = AveragedWeights()
        shared.append(averaged)
        last.insert(0, averaged.restore_raw())
    if not role.is_chief:
        return [*shared, *last]
    # A resumed run: only a better model may replace best.keras.
    best = max((row.get("val_accuracy", float("-inf")) for row in history), default=float("-inf"))
    checkpoint = [BestModelCheckpoint(run.best_model, monitor="val_accuracy", best=best)]
    return [
        EpochTimer(),
        TrainingProgress(config.batch_size, validation=validated),
        *shared,
        *(checkpoint if validated else []),
        HistoryLogger(str(run.history), append=True),
        keras.callbacks.TensorBoard(str(run.logs)),
        *last,
    ]


# Settings that may differ between the workers of one run: each machine's own data folders.
MACHINE_SETTINGS = frozenset({"data_dir", "manual_dir", "image_folder", "collective_timeout"})


def _shared_settings(config: TrainConfig) -> dict[str, Any]:
    """What every worker of a multi-worker run must have alike: its settings (but each
    machine's own folders) and the tf-alexnet version."""
    settings = {k: v for k, v in config.to_dict().items() if k not in MACHINE_SETTINGS}
    return {**settings, "tf_alexnet_version": __version__}


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
    last = history[-1]
    # Without a validation split there is no best epoch: the run's model is the final one.
    best = max(history, key=lambda row: row.get("val_accuracy", float("-inf")))
    images_per_epoch = datasets.steps_per_epoch * global_batch
    rates = [images_per_epoch / row["train_seconds"] for row in history if row.get("train_seconds")]
    metrics = {
        "variant": config.variant,
        "width": config.width,
        "test_time_flip": config.test_time_flip,
        "input_shape": list(config.input_shape),
        "parameters": model.count_params(),
        "epochs": len(history),
        "best_epoch": int(best["epoch"]) + 1 if datasets.validated else None,
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
        "onednn": {
            "in_use": startup.onednn_in_use(),
            startup.ONEDNN: os.environ.get(startup.ONEDNN),
        },
        "cpu_memory_pool": startup.memory_pool(),
        "num_train": datasets.num_train,
        "num_validation": datasets.num_validation,
        "class_names": list(datasets.class_names),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    run.write_json(run.metrics, metrics)
    outcome = (
        f"best val_accuracy {metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']}"
        if datasets.validated
        else f"final accuracy {last['accuracy']:.4f} (training images, no validation split)"
    )
    print(f"Done: {outcome}; models in {run.root}", flush=True)
    return metrics
