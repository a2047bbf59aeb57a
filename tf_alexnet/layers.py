"""Custom Keras layers, registered so `.keras` files load after `import tf_alexnet`."""

from __future__ import annotations

import functools
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="tf_alexnet")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels, as in AlexNet (Krizhevsky et al., 2012).

    Computes `x / (bias + alpha * sum(x_j ** 2)) ** beta`, the sum running over the
    `2 * depth_radius + 1` neighbouring channels. The defaults are the paper's constants
    (k=2, n=5, alpha=1e-4, beta=0.75). TensorFlow does not divide `alpha` by `n`
    (PyTorch's `LocalResponseNorm` does), so these are the paper's numbers as written.

    Args:
        depth_radius: half-width of the channel window (the paper's n=5 is radius 2).
        bias: the paper's k.
        alpha: the paper's alpha.
        beta: the paper's beta.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if depth_radius < 0:
            raise ValueError(
                f"`depth_radius` should be a non-negative integer. Received: {depth_radius=}"
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs: Any) -> Any:
        if keras.backend.backend() != "tensorflow":
            return self._call_with_keras_ops(inputs)
        import tensorflow as tf  # here: Keras's other backends never import TensorFlow

        # TensorFlow's CPU LRN kernel takes float32 and float16 only: under a bf16 policy,
        # normalize in float32 and hand back the compute dtype.
        compute_in_float32 = inputs.dtype == tf.bfloat16
        outputs = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32) if compute_in_float32 else inputs,
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )
        return tf.cast(outputs, inputs.dtype) if compute_in_float32 else outputs

    def _call_with_keras_ops(self, inputs: Any) -> Any:
        """The same formula in `keras.ops`, for Keras's other backends (JAX, PyTorch), in
        float32: the window's sum of squares is `2 * depth_radius + 1` shifted slices."""
        x = keras.ops.cast(inputs, "float32")
        channels = x.shape[-1]
        radius = self.depth_radius
        padded = keras.ops.pad(keras.ops.square(x), [[0, 0]] * (len(x.shape) - 1) + [[radius] * 2])
        window = functools.reduce(
            keras.ops.add, (padded[..., i : i + channels] for i in range(2 * radius + 1))
        )
        outputs = x / keras.ops.power(self.bias + self.alpha * window, self.beta)
        return keras.ops.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )
        return config
