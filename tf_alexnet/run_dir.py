"""The run directory: where a training run keeps everything it produces."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

from tf_alexnet import config as config_lib
from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.files import locked_by_another, write_atomic

# Settings that may change when a killed run is resumed.
RESUMABLE_CHANGES = frozenset({"epochs", "collective_timeout", "deterministic"})
"""Settings a run may resume with changed. `deterministic`: runs started while the default was
the free order (whose order no seed fixed) resume in the seed's order."""

# The key of `evaluation.json` that holds the SHA-256 of the model file it scored.
EVALUATED_MODEL_KEY = "model_sha256"


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: pathlib.Path

    @property
    def config(self) -> pathlib.Path:
        return self.root / contract.RUN_CONFIG

    @property
    def classes(self) -> pathlib.Path:
        """The class names, written when training starts (`metrics.json` has them only once
        the run has finished), so that a killed run's models export and predict with them."""
        return self.root / contract.RUN_CLASSES

    @property
    def listing(self) -> pathlib.Path:
        """An image folder's images that the run's splits were drawn from (their count and a
        digest, `data.folder_listing`)."""
        return self.root / "image_listing.json"

    @property
    def backup(self) -> pathlib.Path:
        return self.root / "backup"

    @property
    def best_model(self) -> pathlib.Path:
        return self.root / contract.RUN_BEST_MODEL

    @property
    def final_model(self) -> pathlib.Path:
        return self.root / contract.RUN_FINAL_MODEL

    @property
    def logs(self) -> pathlib.Path:
        return self.root / "logs"

    @property
    def history(self) -> pathlib.Path:
        return self.root / contract.RUN_HISTORY

    @property
    def curves(self) -> pathlib.Path:
        return self.root / "training_curves.png"

    @property
    def metrics(self) -> pathlib.Path:
        return self.root / contract.RUN_METRICS

    @property
    def evaluation(self) -> pathlib.Path:
        return self.root / "evaluation.json"

    @property
    def confusion_matrix(self) -> pathlib.Path:
        return self.root / "confusion_matrix.png"

    @property
    def workers(self) -> pathlib.Path:
        """Multi-worker runs: `workers/<task>-<index>/` holds each non-chief's own files."""
        return self.root / "workers"

    def worker_backup(self, role_name: str) -> pathlib.Path:
        """Multi-worker runs: each worker's own resume checkpoint, `backup/<task>-<index>`."""
        return self.backup / role_name

    @property
    def backup_metadata(self) -> pathlib.Path:
        """Written by the BackupAndRestore callback, atomically, after each finished epoch."""
        return self.backup / "training_metadata.json"

    def finished_epochs(self, backup: pathlib.Path | None = None) -> int:
        """Epochs that a resumed run skips (0 when there is no backup).

        `backup` is the backup folder (default `backup/`; a worker's for multi-worker runs).
        """
        metadata = backup / "training_metadata.json" if backup else self.backup_metadata
        if not metadata.is_file():
            return 0
        return int(json.loads(metadata.read_text())["epoch"])

    def is_run(self) -> bool:
        return self.config.is_file()

    def has_progress(self) -> bool:
        """Whether the run finished an epoch: a backup, a saved model or a history row."""
        return (
            (self.backup.is_dir() and any(self.backup.iterdir()))
            or self.best_model.is_file()
            or self.final_model.is_file()
            or bool(self.read_history())
        )

    def clear(self) -> None:
        """Deletes what the run wrote: its contents, not the directory (the training process
        holds the directory itself).

        `config.json` goes last: a clear stopped midway (a kill, a file it may not delete)
        leaves a run, which the next `--overwrite` clears, not a folder no command accepts.
        """
        for child in sorted(self.root.iterdir(), key=lambda path: path == self.config):
            if child.is_dir() and not child.is_symlink():
                try:
                    shutil.rmtree(child)
                except OSError as err:  # rmtree names the entry alone ("'train'")
                    raise OSError(err.errno, err.strerror, str(child)) from err
            else:
                child.unlink()

    def model_path(self) -> pathlib.Path:
        """The best model if there is one, else the final one."""
        for path in (self.best_model, self.final_model):
            if path.is_file():
                return path
        raise UserError(
            f"The run {str(self.root)!r} has no saved model yet: {self._no_model_yet()}."
        )

    def _no_model_yet(self) -> str:
        """Why a run has no model file yet, and what to do: when it saves one (after its first
        validated epoch, or only when training ends without a validation split) and where its
        training stands (running, or killed: its backup's epoch)."""
        try:
            validated: bool | None = self.load_config().validation_fraction > 0
        except (UserError, ValueError, OSError):  # config.json unreadable: say both
            validated = None
        if validated is None:
            saves = (
                "it saves best.keras after its first validated epoch, or final.keras when "
                "training ends if it has no validation split"
            )
        elif validated:
            saves = "it saves best.keras after its first validated epoch"
        else:
            saves = "without a validation split it saves final.keras when training ends"
        if in_use_by_a_training(self.root):
            return f"{saves}; its training is still running"
        backups = [self.backup, *(path for path in self.backup.glob("*") if path.is_dir())]
        try:  # a multi-worker run: each worker's backup
            finished = max(self.finished_epochs(backup) for backup in backups)
        except (ValueError, KeyError, TypeError, OSError):  # metadata cut short or unreadable
            finished = 0
        if finished:
            return (
                f"{saves}; its backup is at epoch {finished}: run the same train command "
                "again to finish it"
            )
        return f"{saves}; it finished no epoch: run the same train command again to train it"

    def evaluation_of(self, model: pathlib.Path) -> tuple[dict[str, Any] | None, str | None]:
        """`evaluation.json` if it scored `model` as the file is now, else None and why not
        (None too when the run was not evaluated).

        The report records the SHA-256 of the file it scored (`model_fingerprint`). Another
        one is of another model: an earlier one (`evaluate` ran while a training still ran
        here, or `best.keras` was replaced since), or `final.keras`. A report without one
        (from tf-alexnet before they were recorded) may be any of these: left out too, as a
        test accuracy that is not the model's is worse than none, and `evaluate` gives it.
        """
        if not self.evaluation.is_file():
            return None, None
        report = json.loads(self.evaluation.read_text())
        again = f"tf-alexnet evaluate {str(self.root)!r} scores it"
        recorded = report.get(EVALUATED_MODEL_KEY)
        if recorded is None:
            return None, (
                f"{str(self.evaluation)!r} does not say which model it scored (an earlier "
                f"tf-alexnet wrote it): its test accuracy is left out; {again}."
            )
        if recorded != model_fingerprint(model):
            return None, (
                f"{str(self.evaluation)!r} is of another model than {str(model)!r} as it is "
                f"now: its test accuracy is left out; {again}."
            )
        return report, None

    def load_config(self) -> config_lib.TrainConfig:
        return config_lib.from_recorded(config_lib.read_file(self.config))

    def listing_changed(self, listing: dict[str, Any] | None) -> str | None:
        """How an image folder's `listing` differs from the one the run recorded, or None (the
        same, or nothing to compare: a TFDS dataset, a run recorded before listings were)."""
        if not listing or not self.listing.is_file():
            return None
        try:
            recorded = json.loads(self.listing.read_text())
        except ValueError:  # cut short: nothing to compare
            return None
        if recorded == listing:
            return None
        before, now = recorded.get("train_images"), listing.get("train_images")
        if before != now:
            return f"{now:,} images where it had {before:,}"
        return f"as many images, {now:,}, but not the same ones"

    def read_history(self) -> list[dict[str, float]]:
        """Rows of history.csv, one per epoch (an epoch replayed after a kill: its last row)."""
        if not self.history.is_file():
            return []
        with open(self.history, newline="") as file:
            rows = {}
            for row in csv.DictReader(file):
                if None in row.values() or not row.get("epoch"):
                    continue  # a row cut short by a kill: that epoch is replayed anyway
                # "NA": a metric the epoch did not have (CSVLogger adds val_ columns even to a
                # run without validation)
                rows[int(row["epoch"])] = {k: _number(v) for k, v in row.items() if v != "NA"}
        return [rows[epoch] for epoch in sorted(rows)]

    def truncate_history(self, finished: int) -> None:
        """Keeps in history.csv only the rows of the first `finished` epochs, atomically.

        A kill after an epoch's row was written but before the backup recorded that epoch
        left the row there, and the resumed run, which replays the epoch, appended it again.
        Rows cut short by a kill go too. A history left with no row is deleted (the next
        epoch's row then comes with its header).
        """
        if not self.history.is_file():
            return
        with open(self.history, newline="") as file:
            text = file.read()
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return
        header = rows[0]
        kept = [row for row in rows[1:] if len(row) == len(header) and _epoch(row[0]) < finished]
        if not kept:
            self.history.unlink()
            return
        output = io.StringIO()
        csv.writer(output).writerows([header, *kept])
        if output.getvalue() == text:
            return
        write_atomic(self.history, output.getvalue())  # CSVLogger's "\r\n" lines kept

    def write_json(self, path: pathlib.Path, values: dict[str, Any]) -> None:
        """Writes JSON atomically (temp file + rename): readers never see half a file. And
        durably: `metrics.json` is written before the backup is removed, and a power loss
        could have left it empty with no backup to train it again from."""
        write_atomic(path, json.dumps(values, indent=2, sort_keys=True) + "\n", durable=True)


def _epoch(text: str) -> int | float:
    """A history row's epoch number (infinity if it is not one: the row is dropped)."""
    try:
        return int(text)
    except ValueError:
        return float("inf")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # not a number: kept as a missing value
        return float("nan")


def model_fingerprint(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a model file's bytes, which `evaluation.json` records (`evaluate` reads
    it before loading the model: a file replaced meanwhile then mismatches). A 230 MB file
    took 0.2-0.5 s on 2 busy cores (its disk read alone: 0.13 s)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def resolve_source(source: str | os.PathLike[str]) -> tuple[pathlib.Path, dict[str, Any]]:
    """A run directory or a `.keras` file -> (model path, training metrics if known).

    A run directory gives its best model (else its final one) and its `metrics.json`, with the
    test accuracy from `evaluation.json` when that scored this model file as it is now
    (`RunDir.evaluation_of`; a note says why one is left out).
    """
    path = pathlib.Path(source)
    if path.is_dir():
        run = RunDir(path)
        if not run.is_run():
            raise UserError(f"{str(path)!r} is not a run directory (no config.json).")
        metrics = json.loads(run.metrics.read_text()) if run.metrics.is_file() else {}
        model = run.model_path()
        evaluation, left_out = run.evaluation_of(model)
        if evaluation is not None:
            metrics["test_accuracy"] = evaluation.get("accuracy")
        elif left_out:
            print(f"Note: {left_out}", flush=True)
        return model, metrics
    if path.is_file():
        return path, {}
    raise UserError(f"No run directory or model file at {str(path)!r}.")


def source_config(
    source: str | os.PathLike[str],
    preset: str = "chapter",
    file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> config_lib.TrainConfig:
    """The settings to read a model's data with: a run's own (`config.json`), then `overrides`.

    For a `.keras` file (anything but a run directory): preset < file < overrides, as in
    `config.resolve`.
    """
    run = RunDir(pathlib.Path(source))
    if run.is_run():
        return run.load_config().replace(**(overrides or {}))
    return config_lib.resolve(preset, file, overrides)


def refuse_unwritable(path: str | os.PathLike[str], what: str, remedy: str) -> None:
    """Refuses in one line a destination that cannot be written: `path` itself, or, for a
    `path` still to be made, the nearest folder above it that exists. `what` names the
    destination ("The run directory"), `remedy` says what to do.

    Called before the data, the model or an evaluation cost anything: a read-only run
    directory (a read-only bind mount of a run to resume) was refused only when the run
    first wrote, after the data and the model were ready, and `evaluate` only after the
    whole evaluation. `os.access` writes nothing, and says EROFS for a read-only mount to
    root too. A file where the folder is (or above it) is refused too: `evaluate --output-dir
    FILE` said "File exists" after loading its model and data, with exit status 1.
    """
    path = pathlib.Path(path)
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return
    if folder.is_symlink() and not folder.exists():
        why = f"is a symbolic link to {os.readlink(folder)!r}, which does not exist"
    elif not folder.is_dir():
        why = "is a file"
    elif os.statvfs(folder).f_flag & os.ST_RDONLY:
        why = "is on a read-only file system"
    else:
        why = "is not writable by this user"
    where = f"{what} {str(path)!r}"
    if folder != path:
        where += f" cannot be made: {str(folder)!r}"
    raise UserError(f"{where} {why}. {remedy}")


@contextlib.contextmanager
def in_use_by_this_process(root: str | os.PathLike[str]) -> Iterator[None]:
    """Holds the run directory (creating it) for one training process: another is refused.

    Two trainings into one directory interleaved their `history.csv` and left it unusable.
    The lock is the kernel's (`flock` on the directory itself): it writes nothing into the
    directory, and a killed process leaves none behind. Folders it created are removed again
    if the run wrote nothing into them (a mistake found before training: no empty run left).
    """
    path = pathlib.Path(root)
    # Also a file, or a dangling link (mkdir said only "File exists"), where a folder goes.
    refuse_unwritable(path, "The run directory", "Make it writable or choose another --run-dir.")
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    # Removed only by the holder, while it holds the lock: two trainings started at once
    # may both have seen the folder missing, and the one refused removed the other's.
    with _flocked(path):
        try:
            yield
        finally:
            for folder in created:  # innermost first; stops at the first one not empty
                try:
                    folder.rmdir()
                except OSError:
                    break


@contextlib.contextmanager
def _flocked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive `flock` on the directory `path`; UserError if another process has it."""
    handle = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{str(path)!r} is in use by another training process. Wait for it to end "
                "(a killed one frees it at once), or choose another --run-dir."
            ) from None
        yield
    finally:
        os.close(handle)


def in_use_by_a_training(root: str | os.PathLike[str]) -> bool:
    """Whether a training process holds the run directory `root` (`in_use_by_this_process`),
    by `locked_by_another`: a training that starts in the microseconds the probe holds its
    shared lock is refused as if another ran."""
    try:
        return bool(locked_by_another(root))
    except OSError:  # not ours to read: no training of ours there
        return False


def prepare(
    root: str | os.PathLike[str], config: config_lib.TrainConfig, overwrite: bool
) -> RunDir:
    """Creates the run directory, or checks that an unfinished run there can be resumed.

    The caller writes `config.json` once the data and model are known to be valid, so a
    mistake in the settings leaves no run behind.
    """
    run = RunDir(pathlib.Path(root))
    if run.root.exists() and not run.root.is_dir():
        raise UserError(f"The run directory {str(run.root)!r} is a file.")
    if overwrite and run.is_run():  # only ever delete what a run wrote
        run.clear()
    if run.is_run() or run.metrics.is_file():
        if check_resumable(run, config):
            print(
                f"Note: {str(run.root)!r} holds a run with other settings that finished no "
                "epoch (it failed or was stopped during its first); starting it over with these.",
                flush=True,
            )
            run.clear()
    elif run.root.is_dir() and any(run.root.iterdir()):
        raise UserError(
            f"{str(run.root)!r} is not empty and is not a run directory. Choose another --run-dir."
        )
    run.root.mkdir(parents=True, exist_ok=True)
    # What a kill -9 during a model's save left (the caller holds the directory: no other
    # training writes there).
    from tf_alexnet.saving import remove_stale_temps  # Keras: only once training starts

    remove_stale_temps(run.root)
    return run


def check_resumable(run: RunDir, config: config_lib.TrainConfig) -> bool:
    """Refuses a finished run, or an unfinished one with other settings that finished an
    epoch; True when the run there has other settings but finished no epoch (nothing to
    lose: the caller starts it over), False when it resumes."""
    if run.metrics.is_file():
        raise UserError(
            f"{str(run.root)!r} holds a finished run. Pass --overwrite to replace it, "
            "or choose another --run-dir."
        )
    # through the declarations: a setting added since the run started reads as its default
    # (Runs recorded relative data folders before they were made absolute.)
    recorded = run.load_config()
    previous = recorded.with_absolute_paths().to_dict()
    current = config.to_dict()
    changed = sorted(
        key
        for key in set(previous) | set(current)
        if key not in RESUMABLE_CHANGES and previous.get(key) != current.get(key)
    )
    if not previous.get("image_folder") and not current.get("image_folder"):
        # TFDS data is split at random either way: `--no-stratify` changes nothing there.
        changed = [key for key in changed if key not in config_lib.IMAGE_FOLDER_ONLY]
    if changed and not run.has_progress():
        return True
    backups = [run.backup, *(path for path in run.backup.glob("*") if path.is_dir())]  # workers'
    finished = max(run.finished_epochs(backup) for backup in backups)
    if config.epochs < finished:
        raise UserError(
            f"{str(run.root)!r} holds an unfinished run that has finished {finished} epochs "
            f"already (of {recorded.epochs}): --epochs may be raised when resuming, not set "
            f"below {finished}. Received: --epochs {config.epochs}"
        )
    if changed:
        raise UserError(
            f"{str(run.root)!r} holds an unfinished run with other settings "
            f"({_settings_apart(previous, current, changed)}). Resume it with the same "
            "settings, pass --overwrite, or choose another --run-dir."
        )
    return False


def _settings_apart(previous: dict[str, Any], current: dict[str, Any], keys: list[str]) -> str:
    """Each setting in `keys` as "learning_rate: the run has 0.01, asked 0.1", joined by "; ",
    a nested one down to the entries that differ ("augment.flip: ...")."""
    parts = []
    for key in keys:
        before, now = previous.get(key), current.get(key)
        if isinstance(before, dict) and isinstance(now, dict):
            inner = sorted(
                name for name in before.keys() | now.keys() if before.get(name) != now.get(name)
            )
            parts.append(
                _settings_apart(
                    {f"{key}.{name}": value for name, value in before.items()},
                    {f"{key}.{name}": value for name, value in now.items()},
                    [f"{key}.{name}" for name in inner],
                )
            )
        else:
            parts.append(f"{key}: the run has {before!r}, asked {now!r}")
    return "; ".join(parts)
