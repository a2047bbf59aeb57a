"""Time before it is spent: the first steps measured, progress lines without a terminal."""

from __future__ import annotations

import io
import math
import re

import keras
import numpy as np
import pytest

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.progress import (
    TrainingProgress,
    format_duration,
    progress_interval,
    report_progress,
)


def _fit(progress: TrainingProgress, epochs: int = 2) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model.compile("sgd", "mse")
    x, y = np.zeros((160, 8), "float32"), np.zeros((160, 3), "float32")
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[progress])


def test_training_measures_its_first_steps_and_logs_at_an_interval():
    stream = io.StringIO()  # not a terminal, like docker logs, CI or nohup
    _fit(TrainingProgress(8, interval=0.0, stream=stream, measure_steps=4), epochs=3)
    lines = stream.getvalue().splitlines()
    estimate = [line for line in lines if line.startswith("Measured")]
    assert len(estimate) == 1  # once, on the first steps
    assert re.fullmatch(
        r"Measured on steps 2-5: [\d.e-]+ s/step \([\d,]+ images/s\)\. One epoch \(20 steps\) "
        r"takes about \d+ s; the 3 epochs of this run about \d+ s, plus validation\.",
        estimate[0],
    ), estimate[0]
    progress = [line for line in lines if line.startswith("epoch ")]
    pattern = r"epoch [123] step \d+/20: [\d,]+ images/s, ETA \d+ s, loss [\d.]+"
    assert progress and all(re.fullmatch(pattern, line) for line in progress), progress[:3]
    assert {line.split()[1] for line in progress} == {"1", "2", "3"}


def test_without_validation_the_estimate_does_not_promise_it():
    stream = io.StringIO()
    _fit(TrainingProgress(8, terminal=True, stream=stream, measure_steps=4, validation=False))
    (estimate,) = [line for line in stream.getvalue().splitlines() if line]
    assert re.search(r"; the 2 epochs of this run about \d+ s\.$", estimate), estimate
    assert "validation" not in estimate


def test_with_a_terminal_only_the_estimate():
    stream = io.StringIO()
    _fit(TrainingProgress(8, interval=0.0, terminal=True, stream=stream, measure_steps=4))
    lines = [line for line in stream.getvalue().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Measured on steps 2-5")


def test_the_interval_spaces_the_lines():
    stream = io.StringIO()
    _fit(TrainingProgress(8, interval=3600.0, stream=stream, measure_steps=4))
    assert not [line for line in stream.getvalue().splitlines() if line.startswith("epoch ")]


def test_evaluation_progress_without_a_terminal():
    stream = io.StringIO()
    batches = list(report_progress(range(5), 5, 32, "evaluate", interval=0.0, stream=stream))
    assert batches == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # not after the last batch
    assert all(
        re.fullmatch(r"evaluate: step [1-4]/5: [\d,]+ images/s, ETA \d+ s", line) for line in lines
    )


def test_durations_read_well():
    assert [format_duration(s) for s in (4.4, 200, 7500)] == ["4 s", "3 min 20 s", "2 h 05 min"]


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_wrong_progress_interval_is_said_before_the_run_directory_is_made(
    value, tmp_path, monkeypatch
):
    """`abc` was said after config.json was written (a run left behind); -1 printed a line per
    step and nan silently none."""
    from tests.conftest import TINY_TRAINING
    from tf_alexnet import config as config_lib
    from tf_alexnet.train import train

    monkeypatch.setenv(contract.ENV_PROGRESS_SECONDS, value)
    with pytest.raises(UserError, match=f"should be a number of seconds, 0 or more.*{value!r}"):
        train(config_lib.from_dict(TINY_TRAINING), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 30.0), ("  ", 30.0), ("0", 0.0), ("inf", math.inf)]
)
def test_progress_interval_values(value, seconds, monkeypatch):
    """An empty variable means unset (as a compose file's `${VAR:-}` gives it)."""
    monkeypatch.setenv(contract.ENV_PROGRESS_SECONDS, value)
    assert progress_interval() == seconds
