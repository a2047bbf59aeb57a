"""The run directory's one resolver: a run directory or a model file -> the model to use."""

import builtins
import errno
import io
import json
import os
import pathlib

import pytest

from tests.conftest import inode, synced_around
from tf_alexnet import export
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir, model_fingerprint, resolve_source


def test_a_run_gives_its_best_model_and_its_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text("{}")
    with pytest.raises(UserError, match=r"has no saved model yet: it saves best\.keras after"):
        resolve_source(run.root)
    run.final_model.write_bytes(b"")
    assert resolve_source(run.root) == (run.final_model, {})
    run.best_model.write_bytes(b"")
    run.metrics.write_text(json.dumps({"best_val_accuracy": 0.9}))
    scored = {"accuracy": 0.88, "model_sha256": model_fingerprint(run.best_model)}
    run.evaluation.write_text(json.dumps(scored))
    assert resolve_source(run.root) == (
        run.best_model,
        {"best_val_accuracy": 0.9, "test_accuracy": 0.88},
    )


def test_a_run_without_a_model_says_why_and_what_to_do(tmp_path):
    """A run without a validation split (the `cpu` preset's) saves final.keras only when
    training ends: one killed or diverged midway said only "has no saved model yet"."""
    from tf_alexnet.run_dir import in_use_by_this_process

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text(json.dumps({"validation_fraction": 0}))

    def said() -> str:
        with pytest.raises(UserError) as caught:
            run.model_path()
        message = str(caught.value)
        assert message.startswith(f"The run {str(run.root)!r} has no saved model yet: ")
        assert "\n" not in message and message.endswith(".")
        return message[message.index(": ") + 2 :]

    assert said() == (
        "without a validation split it saves final.keras when training ends; it finished no "
        "epoch: run the same train command again to train it."
    )
    run.backup.mkdir()
    run.backup_metadata.write_text(json.dumps({"epoch": 7, "weights": "weights-7.h5"}))
    assert said() == (
        "without a validation split it saves final.keras when training ends; its backup is at "
        "epoch 7: run the same train command again to finish it."
    )
    with in_use_by_this_process(run.root):
        assert said() == (
            "without a validation split it saves final.keras when training ends; its training "
            "is still running."
        )
    run.config.write_text(json.dumps({"validation_fraction": 0.1}))
    assert said().startswith("it saves best.keras after its first validated epoch; its backup")
    run.config.write_text("{")  # cut short: both ways it may save one
    assert said().startswith(
        "it saves best.keras after its first validated epoch, or final.keras when training "
        "ends if it has no validation split; "
    )
    run.final_model.write_bytes(b"")
    assert run.model_path() == run.final_model


def test_an_evaluation_of_another_model_file_is_left_out_and_said(tmp_path, capsys):
    """`evaluate` while a training still ran there, a best.keras replaced since, a report of
    final.keras: export put that report's accuracy in the metadata of the run's model. A
    report that names no model file (an earlier tf-alexnet's) is left out as well."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text("{}")
    run.best_model.write_bytes(b"the model now")
    run.final_model.write_bytes(b"the model scored")
    for scored, said in (
        ({"model_sha256": model_fingerprint(run.final_model)}, "is of another model than"),
        ({}, "does not say which model it scored (an earlier tf-alexnet wrote it)"),
    ):
        run.evaluation.write_text(json.dumps({"accuracy": 0.88, **scored}))
        assert resolve_source(run.root) == (run.best_model, {})
        out = capsys.readouterr().out
        assert out.startswith(f"Note: {str(run.evaluation)!r} {said}") and out.count("\n") == 1
        assert out.endswith(
            f": its test accuracy is left out; tf-alexnet evaluate {str(run.root)!r} scores it.\n"
        )


def test_a_probe_of_a_run_directory_leaves_its_trainings_lock(tmp_path):
    """`evaluate RUN_DIR` asks whether a training holds the run: the probe must not take the
    lock from it, nor keep one that refuses the next training."""
    from tf_alexnet.run_dir import in_use_by_a_training, in_use_by_this_process

    path = tmp_path / "run"
    assert not in_use_by_a_training(path)  # no folder yet
    with in_use_by_this_process(path):
        assert in_use_by_a_training(path) and in_use_by_a_training(path)
        with (
            pytest.raises(UserError, match="in use by another training process"),
            in_use_by_this_process(path),
        ):
            pass
    assert not in_use_by_a_training(path)
    with in_use_by_this_process(path):  # the probe kept no lock
        pass


def test_a_model_file_is_itself_and_anything_else_is_a_user_error(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    assert resolve_source(str(model)) == (model, {})
    with pytest.raises(UserError, match=r"is not a run directory \(no config\.json\)"):
        resolve_source(tmp_path)
    with pytest.raises(UserError, match="No run directory or model file at"):
        resolve_source(tmp_path / "missing")


def test_export_keeps_the_name():
    assert export.resolve_source is resolve_source


def a_full_disk_for(monkeypatch, *names):
    """Files named `names` opened for writing take their first bytes, then fail as a full
    disk's buffered writes do: at their flush or close, with ENOSPC and no file name."""
    real_open = builtins.open

    class FullDisk(io.FileIO):
        closing = False
        buffered = False  # under Python's buffer, whose flush writes here

        def write(self, data):
            super().write(bytes(data)[:5])
            if self.buffered:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

        def flush(self):
            if not self.closing:
                raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            if not self.closed:
                self.closing = True
                super().close()
                raise OSError(errno.ENOSPC, "No space left on device")

    def opening(file, mode="r", *args, **kwargs):
        if ("w" in mode or "a" in mode) and os.path.basename(file) in names:
            disk = FullDisk(file, "a" if "a" in mode else "w")
            if "b" in mode:
                return disk
            disk.buffered = True
            return io.TextIOWrapper(io.BufferedWriter(disk))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(io, "open", opening)  # pathlib's


def test_write_json_leaves_no_partial_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_json(run.metrics, {"epochs": 1})
    a_full_disk_for(monkeypatch, "metrics.json.tmp")
    with pytest.raises(OSError, match="No space left"):
        run.write_json(run.metrics, {"epochs": 2})
    monkeypatch.undo()
    assert json.loads(run.metrics.read_text()) == {"epochs": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_training_starts_by_removing_the_temp_models_of_killed_writers(tmp_path):
    """A kill -9 while best.keras was written (`save_model_atomic`) left its temp file, up to
    the model's size, for ever; the writer's pid is in its name."""
    import os
    import subprocess
    import sys

    from tests.conftest import TINY_TRAINING
    from tf_alexnet import config as config_lib
    from tf_alexnet.run_dir import prepare

    config = config_lib.from_dict(TINY_TRAINING).with_absolute_paths()
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_json(run.config, config.to_dict())  # an unfinished run
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = [f".best.keras.{ended.pid}.tmp.keras", f".final.keras.{ended.pid}.tmp.keras"]
    kept = [f".best.keras.{os.getppid()}.tmp.keras", ".notes.tmp.keras", "best.keras"]
    for name in stale + kept:
        (run.root / name).write_bytes(b"PK")
    prepare(run.root, config, overwrite=False)
    assert sorted(path.name for path in run.root.iterdir()) == sorted(["config.json", *kept])


def test_a_clear_that_stops_midway_leaves_a_run_that_overwrite_clears(tmp_path, monkeypatch):
    """`--overwrite` deletes the run's files in the folder's order: one that could not be
    deleted (or a kill) after config.json left a folder that was no longer a run, which
    `--overwrite` then refused ("not empty and is not a run directory")."""
    import shutil

    run = RunDir(tmp_path / "run")
    (run.logs / "train").mkdir(parents=True)
    for path in (run.config, run.best_model, run.history, run.metrics):
        path.write_text("{}")
    iterdir = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(sorted(iterdir(self))))
    rmtree = shutil.rmtree

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "train")

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(PermissionError):
        run.clear()
    assert run.is_run()  # still a run: the next --overwrite finishes the job
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    run.clear()
    assert not any(run.root.iterdir())


def test_a_folder_overwrite_may_not_delete_is_named_by_its_path(tmp_path, monkeypatch):
    """shutil.rmtree names a failing entry by its bare name: `--overwrite` of a run whose
    logs/train/ it could not delete said "Permission denied: 'train'"."""
    import shutil

    run = RunDir(tmp_path / "run")
    (run.logs / "train").mkdir(parents=True)

    def refused(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "train")

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(PermissionError) as raised:
        run.clear()
    assert raised.value.filename == str(run.logs)


def test_a_full_disk_names_the_run_file_it_refused(tmp_path, monkeypatch):
    """Python's buffered writes fail at their close, naming no file: training into a full
    disk said only "No space left on device." when it recorded config.json."""
    run = RunDir(tmp_path)
    run.history.write_bytes(b"epoch,loss\r\n0,1\r\n1,2\r\n")
    a_full_disk_for(monkeypatch, "config.json.tmp", "history.csv.tmp")
    with pytest.raises(OSError, match="No space left") as raised:
        run.write_json(run.config, {})
    assert raised.value.filename == str(run.config)
    with pytest.raises(OSError, match="No space left") as raised:
        run.truncate_history(1)
    assert raised.value.filename == str(run.history)
    monkeypatch.undo()
    assert run.history.read_bytes() == b"epoch,loss\r\n0,1\r\n1,2\r\n"  # as it was
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.csv"]


def test_a_full_disk_at_an_epochs_end_names_the_history(tmp_path, monkeypatch):
    """Keras's CSVLogger flushes each row from a buffer, which names no file: a full disk at
    an epoch's end said only "No space left on device."."""
    from tf_alexnet.callbacks import HistoryLogger

    run = RunDir(tmp_path)
    a_full_disk_for(monkeypatch, run.history.name)
    logger = HistoryLogger(str(run.history), append=True)
    logger.on_train_begin()
    with pytest.raises(OSError, match="No space left") as raised:
        logger.on_epoch_end(0, {"loss": 1.0})
    assert raised.value.filename == str(run.history)
    with pytest.raises(OSError, match="No space left"):  # as a full disk's file closes
        logger.csv_file.close()


def test_a_trainer_refused_a_new_run_directory_leaves_it_to_its_holder(tmp_path, monkeypatch):
    """Two trainings started at once into a new --run-dir both saw it missing; the one refused
    then removed the folder it thought it had made, empty still, from under the other."""
    import contextlib

    from tf_alexnet.run_dir import in_use_by_this_process

    path = tmp_path / "runs" / "run"
    mkdir = pathlib.Path.mkdir
    holder = contextlib.ExitStack()

    def the_other_starts_first(self, *args, **kwargs):
        if self == path and not holder._exit_callbacks:
            monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
            holder.enter_context(in_use_by_this_process(path))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", the_other_starts_first)
    with holder:
        refused = pytest.raises(UserError, match="in use by another training process")
        with refused, in_use_by_this_process(path):
            pass
        assert path.is_dir()
    assert not path.parent.exists()  # the holder's own clean-up: it made them


@pytest.mark.parametrize("run", ["link", "link/run"])
def test_a_run_directory_through_a_dangling_link_is_one_line(tmp_path, run):
    """`--run-dir` a symbolic link whose target is gone (or a folder under one) said only
    "File exists: '.../link'"."""
    from tf_alexnet.run_dir import in_use_by_this_process

    (tmp_path / "link").symlink_to(tmp_path / "gone")
    made = "" if run == "link" else f" cannot be made: '{tmp_path / 'link'}'"
    with (
        pytest.raises(UserError) as refused,
        in_use_by_this_process(tmp_path / run),
    ):
        pass
    assert str(refused.value) == (
        f"The run directory '{tmp_path / run}'{made} is a symbolic link to "
        f"'{tmp_path / 'gone'}', which does not exist. Make it writable or choose another "
        "--run-dir."
    )
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("run", ["file", "file/run"])
def test_a_run_directory_where_a_file_is_is_one_line(tmp_path, run):
    from tf_alexnet.run_dir import in_use_by_this_process

    (tmp_path / "file").write_text("notes")
    made = "" if run == "file" else f" cannot be made: '{tmp_path / 'file'}'"
    with pytest.raises(UserError) as refused, in_use_by_this_process(tmp_path / run):
        pass
    assert str(refused.value) == (
        f"The run directory '{tmp_path / run}'{made} is a file. Make it writable or choose "
        "another --run-dir."
    )
    assert (tmp_path / "file").read_text() == "notes"


def test_a_backup_whose_record_a_full_disk_refuses_keeps_the_last_one(tmp_path, monkeypatch):
    """A full disk while the backup's record was written said only "No space left on
    device." and left its temp file and the epoch's weights, which no record names."""
    import keras

    from tf_alexnet.callbacks import AtomicBackupAndRestore

    backup = tmp_path / "backup"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback = AtomicBackupAndRestore(str(backup))
    callback.set_model(model)
    callback._current_epoch, callback._last_batch_seen = 1, 0
    callback._save_model()
    before = {path.name: path.read_bytes() for path in backup.iterdir()}

    a_full_disk_for(monkeypatch, "training_metadata.json.tmp")
    callback._current_epoch = 2
    with pytest.raises(OSError, match="No space left") as raised:
        callback._save_model()
    assert raised.value.filename == str(backup / "training_metadata.json")
    assert {path.name: path.read_bytes() for path in backup.iterdir()} == before


def test_a_runs_json_files_reach_the_disk_before_they_are_relied_on(tmp_path, disk_syncs):
    """`metrics.json` was renamed into place unsynced, and then the backup was removed: after a
    power loss the run could hold an empty metrics.json and nothing to train it again from."""
    run = RunDir(tmp_path)
    run.write_json(run.metrics, {"epochs": 1})
    before, after = synced_around(disk_syncs, run.metrics)
    assert inode(run.metrics) in before and inode(tmp_path) in after
    assert json.loads(run.metrics.read_text()) == {"epochs": 1}
