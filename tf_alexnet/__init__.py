"""tf_alexnet: AlexNet for TensorFlow/Keras 3.

Importing the package is cheap: it does not import TensorFlow. The public API (`AlexNet`,
`load_model`, ...) loads on first use. The package's custom Keras layers are registered as soon
as Keras is imported, before or after `import tf_alexnet`, so `.keras` files saved by tf_alexnet
load with `keras.models.load_model` (or `tf_alexnet.load_model`).

Without TensorFlow installed (the facade's slim `api` image talks to TF Serving and needs none),
only the pure-Python parts work: `tf_alexnet.contract`, `tf_alexnet.errors`, the configuration
declarations and the `tf-alexnet serve` command; the model API raises an ImportError that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tf_alexnet import contract
from tf_alexnet._version import __version__
from tf_alexnet.errors import missing_tensorflow

if TYPE_CHECKING:
    from tf_alexnet.export import load_exported
    from tf_alexnet.layers import LocalResponseNormalization
    from tf_alexnet.model import AlexNet, min_input_size
    from tf_alexnet.saving import load_model

__all__ = [
    "AlexNet",
    "LocalResponseNormalization",
    "__version__",
    "contract",
    "load_exported",
    "load_model",
    "min_input_size",
]

_LAZY = {
    "AlexNet": "tf_alexnet.model",
    "LocalResponseNormalization": "tf_alexnet.layers",
    "load_exported": "tf_alexnet.export",
    "load_model": "tf_alexnet.saving",
    "min_input_size": "tf_alexnet.model",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tf_alexnet' has no attribute {name!r}")
    try:
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


def _register_keras_objects(_keras: object = None) -> None:
    importlib.import_module("tf_alexnet.layers")  # registers LocalResponseNormalization


try:
    import wrapt  # comes with TensorFlow
except ModuleNotFoundError:  # no TensorFlow, hence no Keras: nothing to register
    pass
else:
    # Runs now if Keras is already imported, else right after it is.
    wrapt.register_post_import_hook(_register_keras_objects, "keras")
