"""SIGTERM and Ctrl-C stop a command even when their first raise is swallowed by a finalizer.

Python runs a signal handler between two bytecodes; inside a finalizer (multiprocessing's
pool clean-up, as in a fresh-clone CI run) the handler's exception is printed as "Exception
ignored" and dropped. A multi-worker worker sent SIGTERM there trained on to the end, exit 0.
"""

import os
import signal
import time

import keras
import pytest

from tests.conftest import TINY_TRAINING
from tf_alexnet import cli, interrupts
from tf_alexnet import config as config_lib
from tf_alexnet.errors import Terminated
from tf_alexnet.run_dir import RunDir
from tf_alexnet.train import train

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _SignalsInItsFinalizer:
    """An object whose `__del__` sends the process a signal and waits for its handler there."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        deadline = time.monotonic() + 10
        while interrupts.signalled() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the handler runs here, and its exception goes nowhere


def _swallow(signum: int) -> None:
    obj = _SignalsInItsFinalizer(signum)
    del obj  # "Exception ignored in: <function _SignalsInItsFinalizer.__del__ ...>"


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [
        (signal.SIGTERM, 143, "tf-alexnet: terminated"),
        (signal.SIGINT, 130, "tf-alexnet: interrupted"),
    ],
)
def test_a_signal_a_finalizer_swallowed_still_stops_the_command(
    monkeypatch, capsys, signum, status, said
):
    # As from a terminal: CI's shell runs the suite with SIGINT ignored, which the CLI keeps.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _check_the_command_stops(monkeypatch, capsys, signum, status, said)
    finally:
        signal.signal(signal.SIGINT, before)


def _check_the_command_stops(monkeypatch, capsys, signum, status, said):
    finished = []
    sigterm_before = signal.getsignal(signal.SIGTERM)

    def command(args):
        _swallow(signum)
        finished.append(True)  # the command itself went on: the swallow did happen
        return 0

    monkeypatch.setitem(cli.COMMANDS, "summary", command)
    assert cli.main(["summary"]) == status
    assert finished == [True]
    assert capsys.readouterr().err.strip().splitlines()[-1] == said
    # The record lives only while the command runs: the next one starts clean.
    assert interrupts.signalled() is None
    assert signal.getsignal(signal.SIGTERM) is sigterm_before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_training_stops_at_the_next_batch_after_a_swallowed_sigterm(fashion_mnist, tmp_path):
    class SwallowAtThirdBatch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)
            if len(self.batches) == 3:
                _swallow(signal.SIGTERM)

    config = config_lib.from_dict({**TINY_TRAINING, "steps_per_execution": 1})
    run = RunDir(tmp_path / "run")
    swallower = SwallowAtThirdBatch()
    with interrupts.stop_on_signals(), pytest.raises(Terminated):
        train(config, run.root, callbacks=[swallower])
    # 32 batches an epoch, 2 epochs: it stopped right after the batch that was signalled.
    assert swallower.batches == [0, 1, 2]
    assert run.finished_epochs() == 0 and not run.metrics.exists()
