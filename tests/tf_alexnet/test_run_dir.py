"""The run directory's one resolver: a run directory or a model file -> the model to use."""

import errno
import json
import pathlib

import pytest

from tf_alexnet import export
from tf_alexnet.errors import UserError
from tf_alexnet.run_dir import RunDir, resolve_source


def test_a_run_gives_its_best_model_and_its_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text("{}")
    with pytest.raises(UserError, match="has no saved model yet"):
        resolve_source(run.root)
    run.final_model.write_bytes(b"")
    assert resolve_source(run.root) == (run.final_model, {})
    run.best_model.write_bytes(b"")
    run.metrics.write_text(json.dumps({"best_val_accuracy": 0.9}))
    run.evaluation.write_text(json.dumps({"accuracy": 0.88}))
    assert resolve_source(run.root) == (
        run.best_model,
        {"best_val_accuracy": 0.9, "test_accuracy": 0.88},
    )


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


def test_write_json_leaves_no_partial_file(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_json(run.metrics, {"epochs": 1})
    write_text = pathlib.Path.write_text

    def disk_full(self, text, *args, **kwargs):
        write_text(self, text[:5], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run.write_json(run.metrics, {"epochs": 2})
    monkeypatch.undo()
    assert json.loads(run.metrics.read_text()) == {"epochs": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]
