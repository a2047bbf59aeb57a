"""tf_alexnet: AlexNet for TensorFlow/Keras 3.

Importing the package is cheap: it does not import TensorFlow. The public API (`AlexNet`,
`load_model`, `decode_predictions`, ...) loads on first use. Every custom Keras object the
package saves (the LRN and fused batch-norm layers, the warm-up schedule) is registered as soon
as Keras is imported, before or after `import tf_alexnet`, so `.keras` files written by
tf_alexnet load with `keras.models.load_model` (or `tf_alexnet.load_model`), optimizer included.

Without TensorFlow installed (the facade's slim `api` image talks to TF Serving and needs none),
only the pure-Python parts work: `tf_alexnet.contract`, `tf_alexnet.errors`,
`tf_alexnet.exported` (the exported-model layout), `decode_predictions`, `min_input_size`,
the configuration declarations and the `tf-alexnet serve` command; the model API raises an
ImportError that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tf_alexnet import contract
from tf_alexnet._version import __version__
from tf_alexnet.errors import missing_tensorflow

if TYPE_CHECKING:
    from tf_alexnet.exported import load_exported
    from tf_alexnet.layers import FusedBatchNormalization, LocalResponseNormalization
    from tf_alexnet.model import AlexNet
    from tf_alexnet.predictions import decode_predictions, preprocess_input
    from tf_alexnet.saving import load_model
    from tf_alexnet.schedules import WarmUp
    from tf_alexnet.variants import min_input_size

__all__ = [
    "AlexNet",
    "FusedBatchNormalization",
    "LocalResponseNormalization",
    "WarmUp",
    "__version__",
    "contract",
    "decode_predictions",
    "load_exported",
    "load_model",
    "min_input_size",
    "preprocess_input",
]

_LAZY = {
    "AlexNet": "tf_alexnet.model",
    "FusedBatchNormalization": "tf_alexnet.layers",
    "LocalResponseNormalization": "tf_alexnet.layers",
    "WarmUp": "tf_alexnet.schedules",
    "decode_predictions": "tf_alexnet.predictions",
    "load_exported": "tf_alexnet.exported",
    "load_model": "tf_alexnet.saving",
    "min_input_size": "tf_alexnet.variants",
    "preprocess_input": "tf_alexnet.predictions",
}

_NEEDS_KERAS = {"load_exported"}
"""Defined in pure-Python modules, but of no use without Keras: refused up front without it."""

KERAS_OBJECT_MODULES = ("tf_alexnet.layers", "tf_alexnet.schedules")
"""The modules that register the custom objects tf_alexnet writes into `.keras` files."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tf_alexnet' has no attribute {name!r}")
    try:
        if name in _NEEDS_KERAS:
            importlib.import_module("keras")
        module = importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as err:
        if not missing_tensorflow(err):
            raise
        raise ImportError(
            f"tf_alexnet.{name} needs TensorFlow, and {err.name} is not installed here (the "
            "facade-only `api` image has none). Install it: pip install tf-alexnet"
        ) from None
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names and the public ones not loaded yet, as `dir()` and completion see."""
    return sorted(set(globals()) | set(_LAZY))


def _register_keras_objects(_keras: object = None) -> None:
    for module in KERAS_OBJECT_MODULES:
        importlib.import_module(module)


try:
    import wrapt  # a dependency (TensorFlow brings it too)
except ModuleNotFoundError:  # no TensorFlow, hence no Keras: nothing to register
    pass
else:
    # Runs now if Keras is already imported, else right after it is.
    wrapt.register_post_import_hook(_register_keras_objects, "keras")
