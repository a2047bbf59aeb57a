"""Custom learning-rate schedules that training saves into `.keras` files.

`import tf_alexnet` imports this module, so every model a run saves (its optimizer included)
loads with `tf_alexnet.load_model` or `keras.models.load_model` after that import alone.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="tf_alexnet")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 over `warmup_steps`, then `after` (a schedule or a number),
    counted from step 0 (so a step schedule's boundaries stay where they were configured).

    Args:
        after: the learning rate after the warm-up: a positive finite number, or a
            `keras.optimizers.schedules.LearningRateSchedule`.
        warmup_steps: a non-negative integer (0: no warm-up).
    """

    def __init__(
        self, after: float | keras.optimizers.schedules.LearningRateSchedule, warmup_steps: int
    ) -> None:
        if not isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            if not _is_a(after, numbers.Real) or not (math.isfinite(after) and after > 0):
                raise ValueError(
                    "`after` should be a positive learning rate or a Keras "
                    f"LearningRateSchedule. Received: after={after!r}"
                )
            after = float(after)
        if not _is_a(warmup_steps, numbers.Integral) or warmup_steps < 0:
            raise ValueError(
                "`warmup_steps` should be a non-negative integer. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.after = after
        self.warmup_steps = int(warmup_steps)

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


def _is_a(value: Any, kind: type) -> bool:
    """`isinstance`, numpy numbers included, bools excluded (`True` is an int in Python)."""
    return isinstance(value, kind) and not isinstance(value, bool)
