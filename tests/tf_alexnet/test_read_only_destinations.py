"""A destination that cannot be written is refused in one line before any data, model or
evaluation is loaded: a read-only run directory was refused only when the run first wrote,
after its data and model were ready, and `evaluate` only after the whole evaluation.

Root writes into a `chmod 555` folder, so the real tests use read-only mounts (a read-only
tmpfs, a read-only bind mount of a prepared folder), where `mount` is permitted; the
others fake `os.access` and run everywhere.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tf_alexnet import config as config_lib
from tf_alexnet.cli import main
from tf_alexnet.cluster import Role
from tf_alexnet.errors import UserError
from tf_alexnet.workers import prepare_worker

Mount = Callable[..., pathlib.Path]


@pytest.fixture
def read_only_mount() -> Iterator[Mount]:
    """`mount(target)`: an empty read-only tmpfs at `target`; `mount(target, source)`:
    `source` bind-mounted read-only at `target`. Skips where `mount` is not permitted;
    unmounts at the end."""
    mounted: list[pathlib.Path] = []

    def mount(target: pathlib.Path, source: pathlib.Path | None = None) -> pathlib.Path:
        target.mkdir(parents=True, exist_ok=True)
        if source is None:
            steps = [["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)]]
        else:
            steps = [
                ["mount", "--bind", str(source), str(target)],
                ["mount", "-o", "remount,bind,ro", str(target)],
            ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=30)
            except FileNotFoundError:
                pytest.skip("no `mount` command here")
            if done.returncode:
                pytest.skip(
                    f"`{' '.join(step[:3])} ...` is not permitted here (needs root with "
                    f"CAP_SYS_ADMIN): {done.stderr.strip()}"
                )
            if target not in mounted:
                mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], capture_output=True, timeout=30)


@pytest.fixture
def not_writable(monkeypatch: pytest.MonkeyPatch) -> Callable[[pathlib.Path], None]:
    """`not_writable(folder)`: `os.access` says W_OK no for `folder` (as for a user without
    the right), everywhere else the truth."""
    refused: list[str] = []
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if mode & os.W_OK and os.fspath(path) in refused:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return lambda folder: refused.append(os.fspath(folder))


@pytest.fixture
def nothing_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a command gets as far as its data, its model or its evaluation."""
    import tf_alexnet.evaluate as evaluate
    import tf_alexnet.sources as sources
    import tf_alexnet.train as train

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command loaded its data or model before refusing")

    monkeypatch.setattr(train, "make_datasets", loaded)
    monkeypatch.setattr(train, "make_strategy", loaded)
    monkeypatch.setattr(evaluate, "evaluate", loaded)
    monkeypatch.setattr(sources, "sample_images", loaded)


def _unfinished_run(root: pathlib.Path) -> pathlib.Path:
    """A run that `train --preset quick --run-dir ROOT` resumes: its config, no epoch."""
    root.mkdir(parents=True)
    config = config_lib.resolve("quick").with_absolute_paths()
    (root / "config.json").write_text(json.dumps(config.to_dict()))
    return root


def _model_folder(root: pathlib.Path) -> pathlib.Path:
    """A folder holding `mini.keras`, a tiny untrained model."""
    from tf_alexnet import AlexNet

    root.mkdir(parents=True)
    model = AlexNet(input_shape=(28, 28, 1), classes=10, variant="mini", width=0.25)
    model.save(root / "mini.keras")
    return root


def _listing(root: pathlib.Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


def test_train_refuses_to_resume_in_a_read_only_run_directory_first(
    tmp_path, capsys, read_only_mount, nothing_loaded
):
    source = _unfinished_run(tmp_path / "run")
    before = _listing(source)
    run = read_only_mount(tmp_path / "mounted", source)
    assert main(["train", "--preset", "quick", "--run-dir", str(run)]) == 2
    out, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The run directory '{run}' is on a read-only file system. "
        "Make it writable or choose another --run-dir.\n"
    )
    assert "Precision" not in out  # the strategy was never made
    assert _listing(source) == before


def test_train_refuses_a_new_run_directory_in_a_read_only_folder_first(
    tmp_path, capsys, read_only_mount, nothing_loaded
):
    folder = read_only_mount(tmp_path / "mounted")
    run = folder / "runs" / "new"
    assert main(["train", "--preset", "quick", "--run-dir", str(run)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The run directory '{run}' cannot be made: '{folder}' is on a "
        "read-only file system. Make it writable or choose another --run-dir.\n"
    )
    assert _listing(folder) == []


def test_train_refuses_a_run_directory_it_may_not_write_first(
    tmp_path, capsys, not_writable, nothing_loaded
):
    run = _unfinished_run(tmp_path / "run")
    before = _listing(run)
    not_writable(run)
    assert main(["train", "--preset", "quick", "--run-dir", str(run)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The run directory '{run}' is not writable by this user. "
        "Make it writable or choose another --run-dir.\n"
    )
    assert _listing(run) == before


def test_a_worker_refuses_a_run_directory_it_may_not_write(tmp_path, not_writable):
    run = _unfinished_run(tmp_path / "run")
    not_writable(run)
    role = Role(task_id=1, num_workers=2, is_chief=False)
    with pytest.raises(UserError, match="is not writable by this user"):
        prepare_worker(run, config_lib.resolve("quick"), role, overwrite=False)


def test_evaluate_refuses_a_read_only_run_or_model_folder_before_evaluating(
    tmp_path, capsys, read_only_mount, nothing_loaded
):
    source = _model_folder(tmp_path / "model")
    before = _listing(source)
    folder = read_only_mount(tmp_path / "mounted", source)
    assert main(["evaluate", str(folder / "mini.keras")]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The report folder '{folder / 'evaluation-mini'}' cannot be made: "
        f"'{folder}' is on a read-only file system. Pass --output-dir with a writable folder.\n"
    )
    assert _listing(source) == before


def test_evaluate_refuses_a_read_only_output_dir_before_evaluating(
    tmp_path, capsys, read_only_mount, nothing_loaded
):
    model = _model_folder(tmp_path / "model") / "mini.keras"
    folder = read_only_mount(tmp_path / "mounted")
    output = folder / "report"
    assert main(["evaluate", str(model), "--output-dir", str(output)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: --output-dir '{output}' cannot be made: '{folder}' is on a "
        "read-only file system. Pass --output-dir with a writable folder.\n"
    )
    assert _listing(folder) == []


def test_evaluate_refuses_a_run_directory_it_may_not_write(
    tmp_path, capsys, not_writable, nothing_loaded
):
    run = _unfinished_run(tmp_path / "run")
    _model_folder(tmp_path / "model")
    os.replace(tmp_path / "model" / "mini.keras", run / "best.keras")
    before = _listing(run)
    not_writable(run)
    assert main(["evaluate", str(run)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The run directory '{run}' is not writable by this user. "
        "Pass --output-dir with a writable folder.\n"
    )
    assert _listing(run) == before


def test_export_refuses_a_read_only_models_folder_before_loading_anything(
    tmp_path, capsys, read_only_mount, nothing_loaded
):
    model = _model_folder(tmp_path / "model") / "mini.keras"
    base = read_only_mount(tmp_path / "models")
    assert main(["export", str(model), "--model-base-path", str(base)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The models folder '{base / 'alexnet'}' cannot be made: '{base}' "
        "is on a read-only file system. Pass --model-base-path with a writable folder.\n"
    )
    assert _listing(base) == []


def test_export_refuses_a_models_folder_it_may_not_write(
    tmp_path, capsys, not_writable, nothing_loaded
):
    model = _model_folder(tmp_path / "model") / "mini.keras"
    base = tmp_path / "models"
    (base / "alexnet").mkdir(parents=True)
    not_writable(base / "alexnet")
    assert main(["export", str(model), "--model-base-path", str(base)]) == 2
    _, err = capsys.readouterr()
    assert _one_line(err) == (
        f"tf-alexnet: error: The models folder '{base / 'alexnet'}' is not writable by this "
        "user. Pass --model-base-path with a writable folder.\n"
    )
    assert _listing(base) == ["alexnet"]


def test_a_file_where_a_destination_folder_goes_is_refused_before_loading_anything(
    tmp_path, capsys, nothing_loaded
):
    """`evaluate --output-dir FILE` said "File exists" once its model and data were loaded, and
    `export --model-base-path FILE` "Not a directory", each with exit status 1."""
    model = _model_folder(tmp_path / "model") / "mini.keras"
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    cases = [
        (
            ["evaluate", str(model), "--output-dir", str(model)],
            f"--output-dir '{model}' is a file. Pass --output-dir with a writable folder.",
        ),
        (
            ["export", str(model), "--model-base-path", str(model)],
            f"The models folder '{model / 'alexnet'}' cannot be made: '{model}' is a file. "
            "Pass --model-base-path with a writable folder.",
        ),
        (
            ["evaluate", str(model), "--output-dir", str(tmp_path / "link" / "report")],
            f"--output-dir '{tmp_path / 'link' / 'report'}' cannot be made: "
            f"'{tmp_path / 'link'}' is a symbolic link to '{tmp_path / 'missing'}', which does "
            "not exist. Pass --output-dir with a writable folder.",
        ),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        _, err = capsys.readouterr()
        assert _one_line(err) == f"tf-alexnet: error: {message}\n"
    assert _listing(tmp_path) == ["link", "model", "model/mini.keras"]
