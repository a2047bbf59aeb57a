"""A narrow workaround for keras-team/keras#20585 (`fit` under a multi-worker strategy).

Keras 3's TensorFlow trainer calls `Strategy.reduce` in two ways that
`MultiWorkerMirroredStrategy` rejects once there are two or more workers:

1. `TensorFlowTrainer._maybe_symbolic_build` (run at the start of `fit` and `evaluate`)
   passes the whole first batch, a tuple `(x, y)` of `PerReplica` values, to
   `strategy.reduce("MEAN", batch, axis=None)`. `Strategy.reduce` takes one value, not a
   structure. With one worker the strategy short-cuts the call; with several it hands the
   tuple to the collective all-reduce, which fails converting it to a tensor:
   "Attempt to convert a value (PerReplica:{...}) with an unsupported type".
2. `reduce_per_replica`, which reduces the step's logs, calls
   `strategy.reduce("MEAN", value, axis=0)` in multi-worker mode. The logs are scalars
   (loss, accuracy), which have no axis 0: "Invalid reduction dimension 0 for input with
   0 dimensions".

`KerasCompatibleMultiWorkerStrategy.reduce` accepts both: it reduces a structure leaf by
leaf, and treats `axis=0` on a scalar as `axis=None` (the mean over replicas, which is what
the one-worker path of `reduce_per_replica` computes). Every other call goes to TensorFlow
unchanged, so the class is still a `MultiWorkerMirroredStrategy` in every other respect.

It is used only for the Keras versions in `AFFECTED_KERAS` (checked on 3.15.1, the newest
release at the time). `tests/tf_alexnet/test_multiworker.py` runs the plain strategy with two
workers and asserts that it still fails, so the test breaks, asking for this module's removal,
once a Keras release fixes the bug. Reproduction: `docs/upstream/repro_keras_20585.py`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from packaging.version import Version

# Versions whose TensorFlow trainer has the two calls above. Widen the upper bound only
# after checking the new release (`python docs/upstream/repro_keras_20585.py`).
AFFECTED_KERAS = (Version("3.0"), Version("3.16"))


def needs_keras_20585_workaround(version: str | None = None) -> bool:
    """True for the Keras versions whose `fit` fails under a multi-worker strategy."""
    low, high = AFFECTED_KERAS
    return low <= Version(version or keras.__version__) < high


class KerasCompatibleMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3.15 passes it."""

    def reduce(self, reduce_op: Any, value: Any, axis: int | None) -> Any:
        if isinstance(value, (tuple, list, dict)):  # (1): a batch structure
            return tf.nest.map_structure(lambda leaf: self.reduce(reduce_op, leaf, axis), value)
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None  # (2): a scalar has no batch axis
        return super().reduce(reduce_op, value, axis)
