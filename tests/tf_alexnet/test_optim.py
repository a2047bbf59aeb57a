"""The training objective: optimizer, learning-rate schedules and the warm-up schedule."""

import re

import keras
import pytest

from tests.conftest import TINY_TRAINING
from tf_alexnet import config as config_lib
from tf_alexnet.errors import UserError
from tf_alexnet.optim import learning_rate_schedule, make_optimizer
from tf_alexnet.schedules import WarmUp

TINY = TINY_TRAINING


@pytest.mark.parametrize(
    ("schedule", "at_start", "at_end"),
    [("constant", 0.1, 0.1), ("cosine", 0.1, 0.0), ("step", 0.1, 0.001), ("plateau", 0.1, 0.1)],
)
def test_learning_rate_schedules(schedule, at_start, at_end):
    config = config_lib.from_dict(
        {**TINY, "learning_rate": 0.1, "schedule": schedule, "epochs": 10, "step_epochs": 4}
    )
    rate = make_optimizer(config, steps_per_epoch=100)._learning_rate
    start, end = (float(rate(0)), float(rate(999))) if callable(rate) else (float(rate),) * 2
    assert start == pytest.approx(at_start) and end == pytest.approx(at_end, abs=1e-4)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", {0: 0.001, 49: 0.05, 99: 0.1, 500: 0.1}),
        ("cosine", {0: 0.0, 99: 0.099, 100: 0.1, 999: 0.0}),
        ("step", {0: 0.001, 99: 0.1, 400: 0.1, 401: 0.01, 999: 0.001}),
    ],
)
def test_warmup_ramps_linearly_then_follows_the_schedule(schedule, expected):
    config = config_lib.from_dict(
        {**TINY, "learning_rate": 0.1, "schedule": schedule, "epochs": 10, "step_epochs": 4}
        | {"warmup_epochs": 1}
    )
    rate = learning_rate_schedule(config, steps_per_epoch=100)
    assert {step: float(rate(step)) for step in expected} == pytest.approx(expected, abs=1e-3)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    assert float(restored(250)) == pytest.approx(float(rate(250)))


def test_warmup_is_capped_at_half_a_short_run():
    config = config_lib.from_dict({**TINY, "learning_rate": 0.1, "epochs": 1, "warmup_epochs": 1})
    rate = learning_rate_schedule(config, steps_per_epoch=100)
    assert float(rate(24)) == pytest.approx(0.05, abs=1e-3)  # ramps over 50 steps, not 100
    assert float(rate(60)) == pytest.approx(0.1, abs=1e-3)


def test_warmup_is_refused_where_it_cannot_work():
    with pytest.raises(UserError, match="`warmup_epochs` should be >= 0"):
        config_lib.from_dict({**TINY, "warmup_epochs": -1})
    with pytest.raises(UserError, match="plateau"):
        config_lib.from_dict({**TINY, "schedule": "plateau", "warmup_epochs": 1})


def test_plateau_needs_a_validation_split():
    with pytest.raises(UserError) as info:
        config_lib.from_dict({**TINY, "schedule": "plateau", "validation_fraction": 0})
    assert str(info.value).startswith("schedule='plateau' watches the validation loss")
    assert str(info.value).endswith("Received: validation_fraction=0.0")
    assert config_lib.from_dict({**TINY, "schedule": "plateau"}).validation_fraction > 0


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_a_step_schedule_shorter_than_its_step_stays_constant(warmup_epochs):
    # 10 epochs with the default step_epochs=30: no boundary falls inside the run.
    config = config_lib.from_dict(
        {**TINY, "learning_rate": 0.1, "schedule": "step", "epochs": 10}
        | {"warmup_epochs": warmup_epochs}
    )
    rate = learning_rate_schedule(config, steps_per_epoch=100)
    assert float(rate(999) if callable(rate) else rate) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("after", "warmup_steps", "message"),
    [
        ("x", 10, "`after` should be a positive learning rate or a Keras LearningRateSchedule"),
        (None, 10, "Received: after=None"),
        (-0.1, 10, "Received: after=-0.1"),
        (0.0, 10, "Received: after=0.0"),
        (float("nan"), 10, "Received: after=nan"),
        (True, 10, "Received: after=True"),
        (0.1, -5, "`warmup_steps` should be a non-negative integer. Received: warmup_steps=-5"),
        (0.1, 2.5, "Received: warmup_steps=2.5"),
        (0.1, "10", "Received: warmup_steps='10'"),
    ],
)
def test_warmup_refuses_what_is_not_a_rate_or_a_step_count(after, warmup_steps, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WarmUp(after, warmup_steps)


def test_warmup_takes_numbers_of_any_kind_and_survives_its_config():
    """Numbers (numpy ones too) and schedules, through JSON as a `.keras` file stores them."""
    import json

    import numpy as np

    decay = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
    for after, steps in ((np.float32(0.1), np.int64(10)), (1, 0), (decay, 10)):
        schedule = WarmUp(after, steps)
        config = json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
        restored = keras.optimizers.schedules.deserialize(config)
        assert float(restored(20)) == pytest.approx(float(schedule(20)))
    assert float(WarmUp(1, 0)(0)) == 1.0  # no warm-up: the rate from step 0
