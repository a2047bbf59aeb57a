"""The training objective: SGD, its learning-rate schedule, the loss and the metrics."""

from __future__ import annotations

from typing import Any

import keras

from tf_alexnet.config import TrainConfig
from tf_alexnet.schedules import WarmUp


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    steps_per_epoch: int,
    steps_per_execution: int | None = None,
) -> keras.Model:
    """Compiles `model` with `config`'s optimizer, label-smoothed cross-entropy and accuracy
    (`steps_per_execution`: default `config`'s)."""
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit_compile,
        steps_per_execution=steps_per_execution or config.steps_per_execution,
    )
    return model


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """SGD with the configured momentum, decoupled weight decay and learning-rate schedule."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay or None,
        use_ema=config.ema_momentum > 0,
        ema_momentum=config.ema_momentum or 0.99,  # Keras's default when unused
    )


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The configured schedule, after `warmup_epochs` (at most half the run) of linear warm-up."""
    peak = config.learning_rate
    total = config.epochs * steps_per_epoch
    # At most half the run warms up, so a preset's warm-up still fits a short run.
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total // 2)
    schedule: Any = peak
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak,
            total - warmup,
            warmup_target=peak if warmup else None,
            warmup_steps=warmup,
        )
    boundaries = list(range(config.step_epochs, config.epochs, config.step_epochs))
    if config.schedule == "step" and boundaries:  # none: the run ends before the first step
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [b * steps_per_epoch for b in boundaries],
            [peak * 0.1**i for i in range(len(boundaries) + 1)],
        )
    return WarmUp(schedule, warmup) if warmup else schedule
