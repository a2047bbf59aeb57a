"""Progress a person can read: what a run will cost (measured on its first steps), how far it is."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

import keras

from tf_alexnet import contract
from tf_alexnet.errors import UserError

T = TypeVar("T")


def progress_interval() -> float:
    """Seconds between progress lines without a terminal (`$TF_ALEXNET_PROGRESS_SECONDS`)."""
    text = os.environ.get(contract.ENV_PROGRESS_SECONDS, "").strip() or "30"  # empty: unset
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # also NaN; inf means no progress lines
        raise UserError(
            f"`{contract.ENV_PROGRESS_SECONDS}` should be a number of seconds, 0 or more "
            f"(inf: none). Received: {contract.ENV_PROGRESS_SECONDS}={text!r}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """`45 s`, `3 min 20 s`, `2 h 05 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TrainingProgress(keras.callbacks.Callback):
    """Says what the run will cost, measured on its first steps; logs progress without a TTY.

    After `measure_steps` steps past the first one (which includes tracing and compilation),
    or `measure_seconds`, whichever comes first, prints the measured time per step and what
    one epoch and the rest of the run will take on this machine. Without a terminal (Docker
    logs, CI, nohup: Keras then prints one line per epoch only), it also prints a line every
    `interval` seconds with the step, images per second, the epoch's ETA and the loss.

    Args:
        batch_size: images per step and replica (the global batch is this times the replicas).
        interval: seconds between progress lines (default `progress_interval()`).
        terminal: whether output goes to a terminal (default: `stream.isatty()`).
        stream: where lines go (default `sys.stdout`).
        validation: whether each epoch ends with a validation pass (the estimate says so).
    """

    def __init__(
        self,
        batch_size: int,
        interval: float | None = None,
        terminal: bool | None = None,
        stream: TextIO | None = None,
        measure_steps: int = 10,
        measure_seconds: float = 30.0,
        validation: bool = True,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.interval = progress_interval() if interval is None else interval
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.measure_steps = measure_steps
        self.measure_seconds = measure_seconds
        self.validation = validation
        self._first: tuple[int, float] | None = None  # (steps done, time) after the first call
        self._estimated = False
        self._epochs_left = 0
        self._epoch = 0
        self._last_line = 0.0
        self._last_done = 0

    def _print(self, text: str) -> None:
        print(("\n" if self.terminal else "") + text, file=self.stream, flush=True)

    @property
    def _global_batch(self) -> int:
        return self.batch_size * self.model.distribute_strategy.num_replicas_in_sync

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._epochs_left:  # the first epoch of this session (a resumed run: later)
            self._epochs_left = int(self.params.get("epochs") or 1) - epoch
        if not self._estimated:
            self._first = None  # an epoch's first step may wait for the input pipeline
        self._epoch = epoch
        self._last_line = time.perf_counter()
        self._last_done = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now, done = time.perf_counter(), batch + 1
        steps = self.params.get("steps")
        if self._first is None:  # the first step: tracing, compilation, a pipeline warming up
            self._first = (done, now)
            self._last_line, self._last_done = now, done
            return
        if not self._estimated:
            measured, elapsed = done - self._first[0], now - self._first[1]
            if measured >= self.measure_steps or elapsed >= self.measure_seconds:
                self._estimate(elapsed / measured, self._first[0] + 1, done, steps)
        if not self.terminal and now - self._last_line >= self.interval:
            self._progress_line(done, steps, now, logs or {})
            self._last_line, self._last_done = now, done

    def _estimate(self, seconds_per_step: float, first: int, last: int, steps: Any) -> None:
        self._estimated = True
        rate = self._global_batch / seconds_per_step
        text = (
            f"Measured on steps {first}-{last}: {seconds_per_step:.3g} s/step "
            f"({rate:,.0f} images/s)."
        )
        if steps:
            epoch = seconds_per_step * steps
            text += f" One epoch ({steps:,} steps) takes about {format_duration(epoch)}"
            if self._epochs_left > 1:
                text += (
                    f"; the {self._epochs_left} epochs of this run about "
                    f"{format_duration(epoch * self._epochs_left)}"
                )
            text += ", plus validation." if self.validation else "."
        self._print(text)

    def _progress_line(self, done: int, steps: Any, now: float, logs: dict[str, Any]) -> None:
        elapsed = now - self._last_line
        rate = (done - self._last_done) * self._global_batch / elapsed if elapsed > 0 else 0.0
        total = f"/{steps:,}" if steps else ""
        line = f"epoch {self._epoch + 1} step {done:,}{total}: {rate:,.0f} images/s"
        if steps and rate > 0:
            line += f", ETA {format_duration((steps - done) * self._global_batch / rate)}"
        if "loss" in logs:
            line += f", loss {float(logs['loss']):.4f}"
        self._print(line)


def report_progress(
    batches: Iterable[T],
    steps: int,
    batch_size: int,
    what: str = "evaluate",
    interval: float | None = None,
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Yields `batches`, showing progress: Keras's bar on a terminal, else a line per interval."""
    stream = stream or sys.stdout
    interval = progress_interval() if interval is None else interval
    terminal = stream.isatty()
    bar = keras.utils.Progbar(steps) if terminal else None
    start = last = time.perf_counter()
    for done, batch in enumerate(batches, start=1):
        yield batch
        now = time.perf_counter()
        if bar is not None:
            bar.update(done)
        elif now - last >= interval and done < steps:
            last = now
            rate = done * batch_size / (now - start)
            eta = format_duration((now - start) / done * (steps - done))
            print(
                f"{what}: step {done:,}/{steps:,}: {rate:,.0f} images/s, ETA {eta}",
                file=stream,
                flush=True,
            )
