"""tf_alexnet: AlexNet for TensorFlow/Keras 3.

Importing the package registers every custom Keras object it saves (the LRN layer, the
warm-up schedule), so `.keras` files written by tf_alexnet load with `keras.models.load_model`
(or `tf_alexnet.load_model`), optimizer included.

Without TensorFlow installed (the facade's slim `api` image talks to TF Serving and needs none),
only the pure-Python parts import: `tf_alexnet.contract`, `tf_alexnet.errors`,
`tf_alexnet.exported` (the exported-model layout), `decode_predictions` and the
`tf-alexnet serve` command; the model API then raises an ImportError that says so.
"""

from typing import Any

from tf_alexnet import contract
from tf_alexnet.errors import missing_tensorflow
from tf_alexnet.predictions import decode_predictions, preprocess_input

__version__ = "0.1.0"
__all__ = [
    "AlexNet",
    "LocalResponseNormalization",
    "WarmUp",
    "contract",
    "decode_predictions",
    "load_exported",
    "load_model",
    "min_input_size",
    "preprocess_input",
]

try:
    from tf_alexnet.layers import LocalResponseNormalization
    from tf_alexnet.model import AlexNet, min_input_size
    from tf_alexnet.saving import load_model
    from tf_alexnet.schedules import WarmUp
except ModuleNotFoundError as _err:
    if not missing_tensorflow(_err):
        raise
    _MISSING = _err.name

    def __getattr__(name: str) -> Any:
        if name in __all__:
            raise ImportError(
                f"tf_alexnet.{name} needs TensorFlow, and {_MISSING} is not installed here (the "
                "facade-only `api` image has none). Install it: pip install tf-alexnet"
            )
        raise AttributeError(f"module 'tf_alexnet' has no attribute {name!r}")
else:
    # Pure Python until called; bound only with TensorFlow, so that it fails as above without.
    from tf_alexnet.exported import load_exported
