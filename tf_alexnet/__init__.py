"""tf_alexnet: AlexNet for TensorFlow/Keras 3.

Importing the package registers its custom Keras layers, so `.keras` files saved by
tf_alexnet load with `keras.models.load_model` (or `tf_alexnet.load_model`).
"""

from tf_alexnet import contract
from tf_alexnet.export import load_exported
from tf_alexnet.layers import LocalResponseNormalization
from tf_alexnet.model import AlexNet, min_input_size
from tf_alexnet.saving import load_model

__version__ = "0.1.0"
__all__ = [
    "AlexNet",
    "LocalResponseNormalization",
    "contract",
    "load_exported",
    "load_model",
    "min_input_size",
]
