"""Training end to end with real TensorFlow: run directory, strategy, resume after SIGKILL."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, TINY_TRAINING, run_cli, write_image_folder
from tf_alexnet import config as config_lib
from tf_alexnet.errors import UserError
from tf_alexnet.evaluate import evaluate
from tf_alexnet.model import AlexNet
from tf_alexnet.optim import compile_model
from tf_alexnet.pipeline import fit_steps
from tf_alexnet.run_dir import RunDir, resolve_source
from tf_alexnet.strategy import make_strategy, set_mixed_precision
from tf_alexnet.train import train

TINY = TINY_TRAINING


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(fashion_mnist, tmp_path):
    config = config_lib.from_dict(
        {**TINY, "augment": {"flip": True, "crop": "pad"}, "schedule": "cosine", "width": 0.5}
    )
    metrics = train(config, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    for path in (run.config, run.best_model, run.final_model, run.history, run.curves, run.metrics):
        assert path.is_file(), path
    assert run.logs.is_dir() and any(run.logs.rglob("*.tfevents.*"))
    assert not run.backup.exists()  # deleted once training finished
    assert json.loads(run.config.read_text())["variant"] == "mini"
    history = run.read_history()
    assert [int(row["epoch"]) for row in history] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "train_seconds"} <= set(history[0])
    assert (
        metrics["epochs"] == 2
        and metrics["num_train"] == 2048
        and metrics["num_validation"] == 1200
    )
    assert metrics["best_val_accuracy"] == max(row["val_accuracy"] for row in history)
    # Learning happened: far better than chance (0.1) after 64 steps on real images.
    assert metrics["best_val_accuracy"] > 0.5
    half = AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.5)
    assert metrics["width"] == 0.5 and metrics["parameters"] == half.count_params() < 1_006_250
    best = keras.saving.load_model(run.best_model)
    assert best.input_shape == (None, 28, 28, 1)
    assert best.get_layer("conv3").filters == 48 and best.count_params() == half.count_params()

    report = evaluate(run.best_model, config, tmp_path / "eval")
    assert report["num_examples"] == 10_000
    assert 0.5 < report["accuracy"] <= 1.0
    assert np.array(report["confusion_matrix"]).sum() == 10_000
    assert set(report["per_class"]) == set(report["class_names"])
    assert report["macro_avg"]["support"] == report["weighted_avg"]["support"] == 10_000
    np.testing.assert_allclose(np.array(report["confusion_matrix_normalized"]).sum(axis=1), 1.0)
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 10_000

    with pytest.raises(UserError, match="finished run"):
        train(config, tmp_path / "run")


@pytest.mark.slow
def test_validation_fraction_zero_trains_on_every_image(fashion_mnist, tmp_path):
    """No held-out split: no best epoch to pick, so the run's model is its final one, and
    `evaluate` and `export` take that from the run directory."""
    run_dir = tmp_path / "run"
    train_flags = ["--preset", "quick", "--train-examples", "512", "--epochs", "1"]
    result = run_cli("train", *train_flags, "--validation-fraction", "0", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "512 training images (no validation split: the final model is the run's model)" in (
        result.stdout
    )
    assert "Done: final accuracy 0." in result.stdout and "no validation split" in result.stdout
    run = RunDir(run_dir)
    assert run.final_model.is_file() and not run.best_model.exists()
    assert run.model_path() == run.final_model
    history = run.read_history()
    assert len(history) == 1 and not any(key.startswith("val_") for key in history[0])
    metrics = json.loads(run.metrics.read_text())
    assert metrics["num_train"] == 512 and metrics["num_validation"] == 0
    assert metrics["best_epoch"] is None and metrics["best_val_accuracy"] is None
    assert "val_accuracy" not in metrics["final"] and 0 < metrics["final"]["accuracy"] <= 1
    result = run_cli("evaluate", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["model"].endswith("final.keras") and report["num_examples"] == 10_000
    # A fraction that rounds to no image is a mistake, not a request to skip validation.
    tiny = run_cli(
        "train", *train_flags, "--validation-fraction", "0.000001", "--run-dir", str(tmp_path / "b")
    )
    last_line = tiny.stderr.strip().splitlines()[-1]
    assert tiny.returncode == 2 and "Traceback" not in tiny.stderr
    assert "The validation split is empty" in last_line and "set it to 0" in last_line
    assert not RunDir(tmp_path / "b").is_run()  # no run recorded


def test_mirrored_strategy_over_two_cpus_keeps_replicas_in_sync(fashion_mnist):
    strategy = make_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    config = config_lib.from_dict({**TINY, "epochs": 1, "train_examples": 512})
    from tf_alexnet.data import make_datasets

    datasets = make_datasets(config.data_spec(), config.pipeline_spec(64 * 2))
    with strategy.scope():
        model = compile_model(AlexNet(input_shape=(28, 28, 1), variant="mini"), config, 4)
    before = model.get_layer("fc6").get_weights()[0].copy()
    model.fit(datasets.train, epochs=1, verbose=0, shuffle=False)
    kernel = model.get_layer("fc6").kernel
    replicas = (
        [v.numpy() for v in kernel.value.values]
        if hasattr(kernel, "value") and hasattr(kernel.value, "values")
        else [v.numpy() for v in kernel.values]
    )
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert not np.allclose(replicas[0], before)
    # Batch norm's moving statistics too: each replica's copy follows the global batch.
    for layer in (model.get_layer(f"conv{i}_bn") for i in range(1, 6)):
        for variable in (layer.moving_mean, layer.moving_variance):
            copies = [v.numpy() for v in variable.value.values]
            np.testing.assert_array_equal(copies[0], copies[1])


def test_moving_statistics_sync_averages_the_replicas_without_retracing(caplog):
    """Each sync traced a new function: TensorFlow warned "5 out of the last 5 calls ...
    triggered tf.function retracing" from the third epoch of every mirrored run on."""
    from tf_alexnet.callbacks import SyncMovingStatistics

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    layer = model.layers[0]
    sync = SyncMovingStatistics()
    sync.set_model(model)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for epoch in range(6):  # two syncs an epoch in training: three epochs
            copies = layer.moving_mean.value.values
            copies[0].assign([float(epoch)] * 4)
            copies[1].assign([float(epoch) + 2] * 4)
            sync.on_epoch_end(epoch)
            for copy in layer.moving_mean.value.values:
                np.testing.assert_array_equal(copy.numpy(), [epoch + 1.0] * 4)
    assert "retracing" not in caplog.text


def test_mirrored_validation_splits_evenly_over_the_replicas(tmp_path):
    """A validation split of 3 images over 2 replicas ended epoch 1 in a traceback: Keras builds
    from the first batch by averaging the replicas' shares ("Inputs to operation AddN ... must
    have the same size and shape"), and a replica given no image fails in batch norm."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 255, (28, 28, 1), dtype=np.uint8)
            (tmp_path / "data" / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    settings = {
        **TINY,
        "image_folder": str(tmp_path / "data"),
        "train_examples": None,
        "validation_fraction": 0.125,  # 3 of the 24 images
        "test_fraction": 0.125,
        "batch_size": 4,  # a global batch of 8 over the 2 replicas
        "epochs": 1,
        "strategy": "mirrored",
    }
    from tensorflow.python.data.ops import multi_device_iterator_ops as per_device

    tensorflows = per_device._create_device_dataset
    patched_in_fit = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: patched_in_fit.append(
            per_device._create_device_dataset is not tensorflows
        )
    )
    metrics = train(config_lib.from_dict(settings), tmp_path / "run", callbacks=[probe])
    assert metrics["replicas"] == 2 and metrics["num_train"] == 18
    # the replicas' own datasets ran without autotuning (test_data.py), and only in the fit
    assert patched_in_fit == [True] and per_device._create_device_dataset is tensorflows
    assert metrics["num_validation"] == 2  # the third would leave a replica without one
    assert np.isfinite(RunDir(tmp_path / "run").read_history()[0]["val_loss"])
    with pytest.raises(
        UserError, match=r"The validation split holds 1 image\(s\), fewer than the 2 replicas"
    ):
        # 5% of 24 images drawn over all of them: 1 (class by class, one of each class).
        fewer = {**settings, "validation_fraction": 0.05, "stratify": False}
        train(config_lib.from_dict(fewer), tmp_path / "r2")


def test_strategy_choices():
    assert make_strategy("default").num_replicas_in_sync == 1
    assert make_strategy("one-device").num_replicas_in_sync == 1
    assert make_strategy("auto").num_replicas_in_sync == 1  # no GPU here
    assert isinstance(make_strategy("mirrored"), tf.distribute.MirroredStrategy)


@pytest.mark.slow
def test_resume_after_sigterm_then_sigkill(fashion_mnist, tmp_path):
    """SIGTERM (`docker stop`) stops with one line and status 143; SIGKILL just stops. Both
    resume after the last finished epoch."""
    run = RunDir(tmp_path / "run")
    command = [
        sys.executable,
        "-m",
        "tf_alexnet.cli",
        "train",
        "--preset",
        "quick",
        "--train-examples",
        "1024",
        "--validation-fraction",
        "0.02",
        "--batch-size",
        "32",
        "--epochs",
        "4",
        "--run-dir",
        str(run.root),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def stop_after(epochs: int, sig: signal.Signals) -> subprocess.CompletedProcess[str]:
        process = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while (
            run.finished_epochs() < epochs
            and time.monotonic() < deadline
            and process.poll() is None
        ):
            time.sleep(0.05)
        assert process.poll() is None, "training ended before it could be stopped"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=120)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    terminated = stop_after(1, signal.SIGTERM)
    assert terminated.returncode == 143, terminated.stderr[-3000:]
    assert terminated.stderr.strip().splitlines()[-1] == "tf-alexnet: terminated"
    assert "Traceback" not in terminated.stderr
    terminated_at = run.finished_epochs()
    assert 1 <= terminated_at < 3
    killed = stop_after(terminated_at + 1, signal.SIGKILL)
    assert f"resuming after epoch {terminated_at}" in killed.stdout
    killed_at = run.finished_epochs()
    assert terminated_at < killed_at < 4
    assert not run.metrics.exists()
    # What a kill in the middle of the next backup leaves: a truncated weights file.
    (run.backup / f"epoch{killed_at + 1}-batch0.weights.h5").write_bytes(b"\x89HDF\r\n")

    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resuming after epoch {killed_at}" in result.stdout
    history = run.read_history()
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]
    # The resumed process trained only the epochs that were left.
    assert (
        result.stdout.count("val_accuracy") - result.stdout.count("best val_accuracy")
        == 4 - killed_at
    )
    assert json.loads(run.metrics.read_text())["epochs"] == 4


@pytest.mark.slow
def test_a_resumed_run_trains_as_an_uninterrupted_one(fashion_mnist, tmp_path):
    """The same epochs, in the same order, with the same augmentation and dropout masks. A
    run resumed at epoch 3 replayed epoch 1's shuffle (the dataset's reshuffling counted
    passes from its start) and epoch 1's dropout masks (Keras's seed state is not backed up),
    and ended elsewhere: 0.7574 against 0.7506 accuracy in a stranger's run."""

    class StopAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt  # a kill, after the first epoch's backup

    config = config_lib.from_dict(
        {
            **TINY,
            "train_examples": 1024,
            "augment": {"flip": True, "crop": "pad"},
            "steps_per_execution": 4,  # 15 steps an epoch: 3 per execution (see below)
        }
    )
    assert config.dropout > 0
    train(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[StopAtSecondEpoch()])
    assert RunDir(tmp_path / "resumed").finished_epochs() == 1
    train(config, tmp_path / "resumed")
    whole, resumed = (RunDir(tmp_path / name) for name in ("whole", "resumed"))
    for row, other in zip(whole.read_history(), resumed.read_history(), strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert row[key] == other[key], (int(row["epoch"]), key)
    for a, b in zip(
        keras.saving.load_model(whole.final_model).get_weights(),
        keras.saving.load_model(resumed.final_model).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_same_seed_trains_the_same_model_whoever_built_the_data(
    fashion_mnist, tmp_path, monkeypatch
):
    """The run that builds a TFDS dataset (the first one of a fresh data folder) drew its
    weights after TFDS had drawn from Python's random state: the same command then trained
    another model than every later run (0.1906 against 0.1500 accuracy after an epoch, in a
    stranger's runs)."""
    import random

    from tf_alexnet import train as train_module

    config = config_lib.from_dict({**TINY, "epochs": 1})
    train(config, tmp_path / "built")
    make_datasets = train_module.make_datasets

    def building(*args, **kwargs):  # what building the data may draw, from each global state
        random.random(), np.random.rand(), tf.random.uniform([])
        return make_datasets(*args, **kwargs)

    monkeypatch.setattr(train_module, "make_datasets", building)
    train(config, tmp_path / "building")
    built, building_run = (RunDir(tmp_path / name) for name in ("built", "building"))
    for row, other in zip(built.read_history(), building_run.read_history(), strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert row[key] == other[key], key
    for a, b in zip(
        keras.saving.load_model(built.final_model).get_weights(),
        keras.saving.load_model(building_run.final_model).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_each_epoch_is_whole_executions_of_its_own_data(fashion_mnist, tmp_path, capsys):
    """Keras runs whole executions over the one iterator of all epochs: 31 steps an epoch at
    4 per execution took 32 batches, so each epoch began in the next one's data and the last
    ran out ("Your input ran out of data; interrupting training"), 40% short in the `cpu`
    preset's last epoch (468 steps at 32)."""
    config = config_lib.from_dict(
        {**TINY, "train_examples": 1984, "epochs": 3, "steps_per_execution": 4}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config, tmp_path / "run")
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    run = RunDir(tmp_path / "run")
    model = keras.saving.load_model(run.final_model)
    assert int(model.optimizer.iterations) == 3 * 30  # every epoch ran in full
    assert json.loads(run.metrics.read_text())["num_train"] == 1984
    out = capsys.readouterr().out
    # 1,984 images at 64 a step: 31 steps; 3 per execution leave 1 over, 4 leave 3.
    assert "Note: 3 steps per execution rather than 4, so that each epoch's 30 steps are " in out
    assert "(the last 1 batch(es) of each epoch dropped)" in out


@pytest.mark.slow
def test_the_batches_an_epoch_drops_are_said_even_at_the_steps_asked(
    fashion_mnist, tmp_path, capsys
):
    """23 steps at 7 per execution: 7 leaves 2 batches over, fewer than 6, 5 or 4 do."""
    config = config_lib.from_dict(
        {**TINY, "train_examples": 1472, "batch_size": 64, "epochs": 1, "steps_per_execution": 7}
    )
    train(config, tmp_path / "run")
    model = keras.saving.load_model(RunDir(tmp_path / "run").final_model)
    assert int(model.optimizer.iterations) == 21
    assert (
        "Note: 7 steps per execution, so that each epoch's 21 steps are whole executions "
        "(the last 2 batch(es) of each epoch dropped)." in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("batches", "asked", "expected"),
    [
        (468, 32, (468, 26)),  # the cpu preset on all 60,000 images: a divisor
        (421, 32, (420, 30)),  # prime (54,000 images): 1 batch over at 30
        (15, 4, (15, 3)),
        (3, 32, (3, 3)),  # fewer batches than asked: one execution an epoch
        (100, 1, (100, 1)),
        (97, 2, (97, 1)),
    ],
)
def test_fit_steps(batches, asked, expected):
    assert fit_steps(batches, asked) == expected


FINISHED_EPOCH = "epoch,loss\n0,2.25\n"
"""history.csv of a run that finished one epoch."""


def test_resume_refuses_changed_settings(fashion_mnist, tmp_path):
    config = config_lib.from_dict(TINY)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, config.to_dict())
    run.history.write_text(FINISHED_EPOCH)
    with pytest.raises(
        UserError, match=r"other settings \(learning_rate: the run has 0\.01, asked 0\.1\)\. "
    ):
        train(config.replace(learning_rate=0.1), run.root)
    assert run.load_config() == config  # nothing touched
    changed = config_lib.from_dict(
        {**TINY, "batch_size": 32, "augment": {"flip": True, "crop": "pad"}}
    )
    with pytest.raises(UserError) as refused:
        train(changed, run.root)
    assert (
        "other settings (augment.crop: the run has 'none', asked 'pad'; augment.flip: the run has "
        "False, asked True; batch_size: the run has 64, asked 32). Resume it" in str(refused.value)
    )


def test_resume_refuses_fewer_epochs_than_finished(tmp_path):
    """A run killed after 2 of 6 epochs, resumed with --epochs 1, finished as a 2-epoch run
    whose config.json said 1: `--config runs/x/config.json` no longer reproduced it."""
    from tf_alexnet.run_dir import check_resumable

    config = config_lib.from_dict({**TINY, "epochs": 6})
    run = RunDir(tmp_path / "run")
    run.backup.mkdir(parents=True)
    run.write_json(run.config, config.to_dict())
    run.write_json(run.backup_metadata, {"epoch": 2})
    with pytest.raises(UserError, match=r"finished 2 epochs already \(of 6\).*--epochs 1$"):
        check_resumable(run, config.replace(epochs=1))
    for epochs in (2, 4, 9):  # fewer than asked, but not fewer than done; or more
        assert check_resumable(run, config.replace(epochs=epochs)) is False


@pytest.mark.slow
def test_a_run_that_finished_no_epoch_starts_over_with_new_settings(
    fashion_mnist, tmp_path, capsys
):
    """A first run that failed or was stopped before its first epoch ended (too large a
    batch, a typo found once it ran) refused a corrected rerun without --overwrite, though
    it had nothing to lose."""
    config = config_lib.from_dict(TINY)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, config.replace(learning_rate=0.5).to_dict())
    run.logs.mkdir()
    (run.logs / "events.out.tfevents.1").write_bytes(b"")
    run.history.write_text("epoch,loss\n")  # the header, then the kill
    train(config, run.root)
    assert "finished no epoch" in capsys.readouterr().out
    assert run.load_config() == config.with_absolute_paths()
    assert run.metrics.is_file() and len(run.read_history()) == config.epochs
    assert not (run.logs / "events.out.tfevents.1").exists()


@pytest.mark.slow
def test_a_diverging_run_stops_at_its_last_finished_epoch(fashion_mnist, tmp_path):
    """Keras's TerminateOnNaN let the NaN epoch end as usual: its weights were backed up and
    logged, the run was reported as "Done" with a metrics.json, and its export served NaN."""
    from tf_alexnet.callbacks import TrainingDiverged

    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                bias = self.model.get_layer("predictions").bias  # (oneDNN's ReLU drops NaN)
                bias.assign(np.full(bias.shape, np.nan, "float32"))

    config = config_lib.from_dict(TINY)
    run = RunDir(tmp_path / "run")
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became nan in epoch 2, batch 1\. Nothing.* with --overwrite, or into another",
    ):
        train(config, run.root, callbacks=[PoisonSecondEpoch()])
    assert not run.metrics.exists() and not run.final_model.exists()
    assert [int(row["epoch"]) for row in run.read_history()] == [0]  # epoch 2 not logged
    assert run.finished_epochs() == 1  # nor backed up
    metrics = train(config, run.root)  # resumes from the sane epoch
    assert metrics["epochs"] == 2 and np.isfinite(metrics["final"]["loss"])

    result = run_cli(
        "train", "--preset", "quick", "--train-examples", "256", "--epochs", "1",
        "--learning-rate", "1e12", "--run-dir", str(tmp_path / "cli"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Done" not in result.stdout
    assert re.fullmatch(
        r"tf-alexnet: error: Training diverged: .*--learning-rate, now 1e\+12\) into the same "
        r"--run-dir: it finished no epoch, so it starts over\.",
        result.stderr.strip().splitlines()[-1],
    )


def test_a_second_training_into_a_run_directory_in_use_is_refused(tmp_path):
    """Two trainings into one directory both trained, interleaved history.csv's rows and
    left a run that failed ("invalid literal for int() ... 'epoch'") on every resume."""
    from tf_alexnet.run_dir import in_use_by_this_process

    config = config_lib.from_dict(TINY)
    (tmp_path / "run").mkdir()  # (a folder the holder creates, it removes again if empty)
    with in_use_by_this_process(tmp_path / "run"):
        with pytest.raises(UserError, match="is in use by another training process"):
            train(config, tmp_path / "run")
        result = run_cli("train", "--preset", "quick", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "in use by another training process" in result.stderr.strip().splitlines()[-1]
    assert list((tmp_path / "run").iterdir()) == []  # nothing written into it
    with in_use_by_this_process(tmp_path / "run"):  # freed when the holder ends
        pass


def test_a_run_started_before_a_setting_existed_resumes(tmp_path):
    """An unfinished run's config.json from an older version lacks newer settings (`width`)."""
    from tf_alexnet.run_dir import check_resumable

    config = config_lib.from_dict(TINY)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    older = {key: value for key, value in config.to_dict().items() if key != "width"}
    run.write_json(run.config, older)
    run.history.write_text(FINISHED_EPOCH)
    check_resumable(run, config)  # the default width: the same settings
    with pytest.raises(UserError, match=r"other settings \(width: the run has 1\.0, asked 2\.0\)"):
        check_resumable(run, config.replace(width=2.0))


def test_a_run_started_in_the_free_order_resumes_in_the_seeds_order(tmp_path):
    """The default became the seed's order (`deterministic`): a run started before, whose
    config.json records the free order, was refused on resume with the same command
    ("deterministic: the run has False, asked True")."""
    from tf_alexnet.run_dir import check_resumable

    config = config_lib.from_dict(TINY)
    assert config.deterministic is True
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, config.replace(deterministic=False).to_dict())
    run.history.write_text(FINISHED_EPOCH)
    assert check_resumable(run, config) is False  # resumes
    assert check_resumable(run, config.replace(deterministic=False)) is False


def test_a_tfds_run_recorded_before_stratify_resumes(tmp_path):
    """`stratify` read as false for every run recorded before it (only image folders were split
    at random), so an unfinished Fashion-MNIST run of an older version was refused on resume
    with "stratify: the run has False, asked True", though TFDS data is split at random either
    way. It reads as its default for TFDS runs; a TFDS run resumes with either value."""
    from tf_alexnet.run_dir import check_resumable

    config = config_lib.from_dict(TINY)
    assert config.image_folder is None and config.stratify is True
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    older = {key: value for key, value in config.to_dict().items() if key != "stratify"}
    run.write_json(run.config, older)
    run.history.write_text(FINISHED_EPOCH)
    assert run.load_config().stratify is True
    assert check_resumable(run, config) is False  # resumes
    assert check_resumable(run, config.replace(stratify=False)) is False
    folder = config.replace(image_folder=str(tmp_path / "data"))
    run.write_json(run.config, {k: v for k, v in folder.to_dict().items() if k != "stratify"})
    with pytest.raises(UserError, match=r"stratify: the run has False, asked True"):
        check_resumable(run, folder)  # an image folder's splits do change


def test_data_folders_are_recorded_absolute_and_older_relative_ones_resume(tmp_path, monkeypatch):
    """config.json recorded `image_folder` as typed, so a run trained with a relative folder
    could be evaluated or exported only from the directory it was trained in."""
    from tf_alexnet.run_dir import check_resumable

    monkeypatch.chdir(tmp_path)
    config = config_lib.from_dict({**TINY, "image_folder": "data"})
    absolute = config.with_absolute_paths()
    assert absolute.image_folder == str(tmp_path / "data") and absolute.data_dir is None
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, config.to_dict())  # as recorded before
    run.history.write_text(FINISHED_EPOCH)
    check_resumable(run, absolute)  # the same folder, seen from where the run was started
    monkeypatch.chdir(run.root)
    apart = f"image_folder: the run has '{run.root / 'data'}', asked '{tmp_path / 'data'}'"
    with pytest.raises(UserError, match=re.escape(f"other settings ({apart}).")):
        check_resumable(run, absolute)


@pytest.mark.slow
def test_a_run_says_what_it_made_of_its_data_settings(tmp_path, capsys):
    """More training images asked for than there are, and colour images read in gray: the
    run trains, and says so (the first went without a word)."""
    folder = write_image_folder(tmp_path / "data", {"": 20}, size=(28, 28))
    settings = {"validation_fraction": 0.1, "test_fraction": 0.1, "batch_size": 8, "epochs": 1}
    config = config_lib.from_dict(
        {**TINY, **settings, "image_folder": str(folder), "train_examples": 100, "channels": 1}
    )
    train(config, tmp_path / "run")
    out = capsys.readouterr().out
    assert (
        "Note: train_examples 100 is more than the 32 training images the splits leave; "
        "training on all of them.\n"
    ) in out
    assert (
        "Note: the images are in colour and the model reads them in gray (channels 1); "
        "pass --channels 3 to keep the colour.\n"
    ) in out
    assert " on 32 training images (4 more for validation)" in out
    train(config.replace(train_examples=32), tmp_path / "exact")
    assert "train_examples" not in capsys.readouterr().out  # all that was asked for


def test_overwrite_only_deletes_run_directories(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    config = config_lib.from_dict(TINY)
    with pytest.raises(UserError, match="not a run directory"):
        train(config, tmp_path, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_mixed_precision_modes():
    try:
        assert set_mixed_precision("off").policy == "float32"
        assert set_mixed_precision("bf16").policy == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        with pytest.raises(UserError, match=r"fp16.*needs a GPU"):
            set_mixed_precision("fp16")
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_train_gives_back_the_callers_dtype_policy(fashion_mnist, tmp_path):
    """A bf16 run must not leave Keras building the caller's next models in bf16."""
    assert keras.mixed_precision.global_policy().name == "float32"
    # a few steps: bf16 is emulated (slow) on CPUs without bf16 units
    short = {**TINY, "train_examples": 256, "epochs": 1, "mixed_precision": "bf16"}
    metrics = train(config_lib.from_dict(short), tmp_path / "run")
    assert metrics["dtype_policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert AlexNet(input_shape=(28, 28, 1), variant="mini").layers[1].dtype_policy.name == "float32"


@pytest.mark.slow
def test_evaluate_a_model_file_from_the_command_line(fashion_mnist, tmp_path):
    model = AlexNet(input_shape=(28, 28, 1), variant="mini", classifier_activation="softmax")
    model.save(tmp_path / "model.keras")
    result = run_cli(
        "evaluate", str(tmp_path / "model.keras"), "--output-dir", str(tmp_path / "report")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report["num_examples"] == 10_000
    assert report["accuracy"] < 0.3  # an untrained model is near chance
    # Probabilities (softmax output) are read as such: the loss of a near-uniform guess.
    assert report["loss"] == pytest.approx(np.log(10), abs=0.5)


class _Weights(keras.callbacks.Callback):
    """Records, at each epoch's end, the model's weights and the optimizer's averages."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[list[np.ndarray], list[np.ndarray], float]] = []

    def on_epoch_end(self, epoch, logs=None):
        averages = self.model.optimizer._model_variables_moving_average
        self.seen.append(
            (
                [v.numpy() for v in self.model.trainable_weights],
                [v.numpy() for v in averages],
                float((logs or {}).get("val_loss", np.nan)),
            )
        )


def test_averaged_weights_are_in_the_model_for_validation_and_checkpoints_only():
    """`AveragedWeights`: validation and the checkpoints see the moving average; training,
    and the backup saved last at each epoch's end, the raw weights; after fit, the average."""
    from tf_alexnet.callbacks import AveragedWeights

    keras.utils.set_random_seed(0)
    x, y = np.random.rand(256, 8).astype("float32"), np.random.randint(0, 3, 256)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    averaged, at_checkpoint, at_backup = AveragedWeights(), _Weights(), _Weights()
    model.fit(
        x,
        y,
        validation_data=(x[:64], y[:64]),
        epochs=3,
        batch_size=32,
        verbose=0,
        callbacks=[averaged, at_checkpoint, averaged.restore_raw(), at_backup],
    )
    for (model_c, slots_c, _), (model_b, slots_b, _) in zip(
        at_checkpoint.seen, at_backup.seen, strict=True
    ):
        for average, raw, swapped_average, swapped_raw in zip(
            model_c, model_b, slots_b, slots_c, strict=True
        ):
            np.testing.assert_allclose(average, swapped_average, atol=1e-5)
            np.testing.assert_allclose(raw, swapped_raw, atol=1e-5)
        assert any(not np.allclose(a, r, atol=1e-3) for a, r in zip(model_c, model_b, strict=True))
    # The last epoch's validation loss is the average's; the model ends holding the average.
    final = [w.numpy() for w in model.trainable_weights]
    for weight, average in zip(final, at_backup.seen[-1][1], strict=True):
        np.testing.assert_allclose(weight, average, atol=1e-5)
    last_val_loss = at_checkpoint.seen[-1][2]
    assert model.evaluate(x[:64], y[:64], verbose=0) == pytest.approx(last_val_loss, rel=1e-4)
    model.set_weights(at_backup.seen[-1][0])  # the raw weights score differently
    assert model.evaluate(x[:64], y[:64], verbose=0) != pytest.approx(last_val_loss, rel=1e-3)


@pytest.mark.slow
def test_a_run_with_averaged_weights_checkpoints_and_keeps_the_average(fashion_mnist, tmp_path):
    """`ema_momentum`: best.keras and final.keras hold the weights whose validation figures
    history.csv records, and the backup sits after the swap back to the raw weights."""
    from tf_alexnet.callbacks import AtomicBackupAndRestore, AveragedWeights, BestModelCheckpoint
    from tf_alexnet.cluster import SINGLE_PROCESS
    from tf_alexnet.data import make_datasets
    from tf_alexnet.train import _callbacks

    config = config_lib.from_dict({**TINY, "ema_momentum": 0.9, "learning_rate": 0.05})
    run = RunDir(tmp_path / "run")
    train(config, run.root)
    history = run.read_history()
    validation = make_datasets(config.data_spec(), config.pipeline_spec(64)).validation
    best_row = max(history, key=lambda row: row["val_accuracy"])
    for path, row in ((run.final_model, history[-1]), (run.best_model, best_row)):
        loss, accuracy = keras.saving.load_model(path).evaluate(validation, verbose=0)
        assert loss == pytest.approx(row["val_loss"], rel=1e-4), path.name
        assert accuracy == pytest.approx(row["val_accuracy"], abs=1.5 / 1200), path.name

    names = [type(c).__name__ for c in _callbacks(config, run, run.backup, [], SINGLE_PROCESS)]
    assert (
        names.index(AveragedWeights.__name__)
        < names.index(BestModelCheckpoint.__name__)
        < names.index("LambdaCallback")  # restore_raw()
        == names.index(AtomicBackupAndRestore.__name__) - 1
        == len(names) - 2
    )


def test_mirrored_strategies_train_different_models_in_one_process():
    """A second MirroredStrategy in one process all-reduced with the first one's collective keys:
    TensorFlow's own MirroredStrategy failed here on the second model ("Shape mismatch in the
    collective instance 100", tensorflow/tensorflow#62790). Collective all-reduce over the two
    logical CPUs, the kind MirroredStrategy uses on GPUs."""
    from tf_alexnet.strategy import mirrored_strategy

    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    for units in (3, 5):
        strategy = mirrored_strategy(devices)
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
            model.compile(optimizer="sgd", loss="mse")
        model.fit(np.ones((8, 4)), np.ones((8, units)), batch_size=8, verbose=0)
        copies = [v.numpy() for v in model.layers[0].kernel.value.values]
        np.testing.assert_array_equal(copies[0], copies[1])


def test_a_mistake_found_before_training_leaves_no_empty_run_directory(tmp_path):
    """`train` with data that is not there said so, and left an empty runs/e7/ behind."""
    from tf_alexnet.train import train

    config = config_lib.from_dict({**TINY, "image_folder": str(tmp_path / "nowhere")})
    (tmp_path / "runs").mkdir()
    for run_dir in (tmp_path / "runs" / "e7", tmp_path / "new" / "deeper" / "e7"):
        with pytest.raises(UserError):
            train(config, run_dir)
    assert list((tmp_path / "runs").iterdir()) == []  # it was there before: kept
    assert not (tmp_path / "new").exists()  # created for the run: removed, parents too
    (tmp_path / "runs" / "mine").mkdir()  # an empty folder the user made is kept
    with pytest.raises(UserError):
        train(config, tmp_path / "runs" / "mine")
    assert (tmp_path / "runs" / "mine").is_dir()


@pytest.mark.slow
def test_a_kill_after_the_last_epoch_finishes_the_run_without_training_again(
    fashion_mnist, tmp_path, monkeypatch, capsys
):
    """Keras deleted `backup/` at the end of `fit`, before `final.keras` and `metrics.json`
    were written: a kill in between left a run that the same command trained again from
    epoch 1, doubling history.csv (0,1,0,1)."""
    import tf_alexnet.train as train_module

    config = config_lib.from_dict({**TINY, "train_examples": 512})
    run = RunDir(tmp_path / "run")
    trained = {}

    def killed(model, path):
        trained["weights"] = [w.copy() for w in model.get_weights()]
        raise KeyboardInterrupt  # a kill once fit has returned

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "save_model_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, run.root)
    assert run.finished_epochs() == 2 and not run.metrics.exists()
    capsys.readouterr()

    metrics = train(config, run.root)
    out = capsys.readouterr().out
    assert "resuming after epoch 2" in out and "Epoch 1/" not in out
    assert [line.split(",")[0] for line in run.history.read_text().splitlines()[1:]] == ["0", "1"]
    assert metrics["epochs"] == 2 and run.metrics.is_file() and run.final_model.is_file()
    assert not run.backup.exists()  # deleted once the run's files are written
    for a, b in zip(
        keras.saving.load_model(run.final_model).get_weights(), trained["weights"], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="finished run"):
        train(config, run.root)


def _interrupted_after_one_epoch(root):
    """A TINY run of 512 images interrupted (Ctrl-C) as its second epoch begins."""

    class StopAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    config = config_lib.from_dict({**TINY, "train_examples": 512})
    run = RunDir(root)
    with pytest.raises(KeyboardInterrupt):
        train(config, run.root, callbacks=[StopAtSecondEpoch()])
    return config, run


@pytest.mark.slow
def test_a_resumed_run_drops_history_rows_of_epochs_the_backup_had_not_recorded(
    fashion_mnist, tmp_path
):
    """A kill after an epoch's row reached history.csv but before its backup: the resumed
    run replays that epoch and CSVLogger appended its row a second time."""

    config, run = _interrupted_after_one_epoch(tmp_path / "run")
    assert run.finished_epochs() == 1
    header, first = run.history.read_text().splitlines()[:2]
    # The row of epoch 2 (index 1), written before the kill, and half of a row after it.
    stray = "1" + first[first.index(",") :]
    run.history.write_text(f"{header}\n{first}\n{stray}\n1,0.5\n")

    train(config, run.root)
    lines = run.history.read_text().splitlines()
    assert lines[0] == header and lines[1] == first
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1"]
    assert lines[2] != stray  # the replayed epoch's own row
    assert [int(row["epoch"]) for row in run.read_history()] == [0, 1]


@pytest.mark.slow
def test_a_resumed_run_drops_the_evaluation_of_its_earlier_model(fashion_mnist, tmp_path):
    """`evaluate` of a killed run, then its resume: evaluation.json described the best.keras
    that the resume replaced, and `export` copied its test accuracy into the new model's
    metadata."""

    config, run = _interrupted_after_one_epoch(tmp_path / "run")
    run.write_json(run.evaluation, {"accuracy": 0.5, "model": str(run.best_model)})
    run.confusion_matrix.write_bytes(b"a picture of the earlier model")
    train(config, run.root)
    assert not run.evaluation.exists() and not run.confusion_matrix.exists()
    assert "test_accuracy" not in resolve_source(run.root)[1]


FULL_DISK_TRAINING = (
    "train", "--preset", "quick", "--variant", "mini", "--image-size", "28",
    "--train-examples", "256", "--batch-size", "32", "--epochs", "1",
)  # fmt: skip
"""8 steps of the mini variant: its best.keras and its backup's weights are 8 MB each."""


FILE_SIZE_LIMITED = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
"""Runs `python ARGS` under a file size limit. Set in a process of its own, not by
`preexec_fn`: forked from a pytest process where gRPC runs (the serving tests load it),
the child aborted before its exec ("Epoll1Poller ... epoll_wait error: Bad file descriptor")."""


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("validation", "limit", "written"),
    [("0", 1_000_000, "backup/epoch1-batch0.weights.h5"), ("0.01", 4_000_000, "best.keras")],
)
def test_a_file_too_large_during_training_is_named(
    fashion_mnist, tmp_path, validation, limit, written
):
    """A write refused by the file size limit (`ulimit -f`), as a full disk refuses one, said
    "File too large." for best.keras, naming no file; for the backup's weights, HDF5's two
    lines "Can't synchronously write data (file write failed: time = ...", and the half
    written weights file stayed in the backup folder."""
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(limit), "-m", "tf_alexnet.cli",
         *FULL_DISK_TRAINING, "--validation-fraction", validation, "--run-dir", str(run)],
        capture_output=True, text=True, timeout=170, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"tf-alexnet: error: File too large: {str(run / written)!r}."
    )
    assert not list((run / "backup").glob("*.weights.h5"))
    assert not (run / written).exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_disk_during_a_backup_is_one_line_and_no_crash(fashion_mnist, tmp_path):
    """On a full disk (a 10 MB tmpfs: best.keras fits, the backup's weights do not), HDF5
    kept the failed weights file open and flushed it again at exit: after its one-line error
    the process died of a segmentation fault (status 139)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=10m tmpfs {mount}"],
        capture_output=True,
    )
    if probe.returncode:
        pytest.skip("no private mount namespace for a small tmpfs here (unshare -rm)")
    cli = f"{sys.executable} -m tf_alexnet.cli " + " ".join(FULL_DISK_TRAINING)
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         f"mount -t tmpfs -o size=10m tmpfs {mount} && {cli} --validation-fraction 0.01 "
         f"--run-dir {mount}/run; status=$?; ls -A {mount}/run/backup; exit $status"],
        capture_output=True, text=True, timeout=170, cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Segmentation fault" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tf-alexnet: error: No space left on device: "
        f"{str(mount / 'run' / 'backup' / 'epoch1-batch0.weights.h5')!r}."
    )
    assert result.stdout.strip().splitlines()[-1].startswith("Training")  # backup/ is empty


def test_a_backup_written_before_fused_batch_norm_resumes(tmp_path):
    """`mini` normalized with Keras's BatchNormalization before FusedBatchNormalization (same
    weights), and a weights file names each layer's group after its class: a run killed under
    the older version was refused on resume with Keras's "A total of 5 objects could not be
    loaded", after five warnings. The backup is written here as that version wrote it."""
    import h5py

    from tf_alexnet import AlexNet
    from tf_alexnet.callbacks import AtomicBackupAndRestore

    def model() -> keras.Model:
        built = AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25)
        built.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        built.optimizer.build(built.trainable_variables)
        return built

    older = model()
    backup = tmp_path / "backup"
    backup.mkdir()
    weights = backup / "epoch1-batch0.weights.h5"
    older.save_weights(weights)
    with h5py.File(weights, "r+") as file:
        for name in [n for n in file["layers"] if n.startswith("fused_batch_normalization")]:
            file["layers"].move(name, name.removeprefix("fused_"))  # the older groups
        assert "batch_normalization_4" in file["layers"]
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 1, "weights": weights.name})
    )
    resumed = model()
    callback = AtomicBackupAndRestore(str(backup))
    callback.set_model(resumed)
    callback.on_train_begin()
    assert resumed._initial_epoch == 1
    for before, after in zip(older.weights, resumed.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))

    weights.write_bytes(b"")  # not a weights file at all: one line, not Keras's
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 1, "weights": weights.name})
    )
    other = AtomicBackupAndRestore(str(backup))
    other.set_model(model())
    with pytest.raises(UserError, match=r"Cannot resume from the backup .*--overwrite"):
        other.on_train_begin()
