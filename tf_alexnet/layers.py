"""Custom Keras layers, registered so `.keras` files load after `import tf_alexnet`."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import keras

from tf_alexnet.variants import check_input_size, min_input_size


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
        if not (
            isinstance(depth_radius, numbers.Integral)
            and not isinstance(depth_radius, bool)
            and depth_radius >= 0
        ):
            raise ValueError(
                f"`depth_radius` should be a non-negative integer. Received: {depth_radius=}"
            )
        self.depth_radius: int = int(depth_radius)
        self.bias: float = _check_number("bias", bias, "a positive number", lambda v: v > 0)
        self.alpha: float = _check_number("alpha", alpha, "a non-negative number", lambda v: v >= 0)
        self.beta: float = _check_number("beta", beta, "a non-negative number", lambda v: v >= 0)

    def build(self, input_shape: Any) -> None:
        if len(input_shape) != 4:
            raise ValueError(
                "`LocalResponseNormalization` normalizes 4D inputs (batch, height, width, "
                f"channels). Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        if keras.backend.backend() != "tensorflow":
            return self._call_with_keras_ops(inputs)
        import tensorflow as tf  # here: Keras's other backends never import TensorFlow

        # Normalize in float32 whatever the compute dtype, and hand that dtype back: the CPU
        # kernel has no bfloat16 or float64; in float16 the window's sum of squares overflows
        # (activations above ~114 gave 0), and XLA (`jit_compile=True`, Keras's default on a
        # GPU) fails to compile a float16 LRN ("Seen floating point types of different
        # precisions ... mixed precision is disallowed").
        compute_in_float32 = inputs.dtype != tf.float32
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


def _check_number(name: str, value: Any, expected: str, valid: Any) -> float:
    """`value` as a float; a ValueError unless it is a finite real number that is `valid`."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not valid(value)
    ):
        raise ValueError(f"`{name}` should be {expected}. Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="tf_alexnet")
class MinimumImageSize(keras.layers.Layer):
    """Passes images through unchanged, and refuses those too small for an AlexNet variant.

    A network built for images of any size (`input_shape=(None, None, C)`) cannot check
    their size when it is built; given too small an image, TensorFlow's oneDNN pooling fails
    with an obscure error, or kills the process with a division by zero. This layer checks
    each batch: with the size known when the model is called or traced, a `ValueError`;
    otherwise (TensorFlow graphs of unknown size), an `InvalidArgumentError` with the same
    message when the batch runs.

    XLA drops that run-time check (a too-small image gave NaN features), so the layer tells
    Keras it does not support `jit_compile`: a model holding it compiles without XLA (Keras
    warns when `jit_compile=True` was asked for), and `jit_compile="auto"` resolves to off.
    A `tf.function(jit_compile=True)` of your own around it gets no check for images of
    unknown size.

    Args:
        variant: the AlexNet variant whose smallest input (`min_input_size`) applies.
    """

    def __init__(self, variant: str, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.supports_jit = False  # see the docstring: XLA would drop the check
        self.variant = variant
        self.min_size = min_input_size(variant)

    def call(self, inputs: Any) -> Any:
        height, width = inputs.shape[1], inputs.shape[2]
        if height is not None and width is not None:
            check_input_size(self.variant, min(height, width), f"images of {height}x{width}")
            return inputs
        if keras.backend.backend() != "tensorflow":
            return inputs
        import tensorflow as tf  # here: Keras's other backends never import TensorFlow

        check = tf.debugging.assert_greater_equal(
            tf.shape(inputs)[1:3],
            self.min_size,
            message=(
                f"Input size must be at least {self.min_size}x{self.min_size} for "
                f"variant={self.variant!r}. Received images of (height, width):"
            ),
        )
        with tf.control_dependencies([check]):
            return tf.identity(inputs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(variant=self.variant)
        return config


@keras.saving.register_keras_serializable(package="tf_alexnet")
class MirrorTwins(keras.layers.Layer):
    """Test-time flips, first half: at inference, the batch followed by its mirror images.

    Outside training, `images` of shape `(N, H, W, C)` become `(2N, H, W, C)`: the images, then
    each flipped left to right. A `TwinMean` before the model's output averages the two halves'
    class scores back to `N`, so the model's answer is the same for an image and its mirror
    image. In training (`training=True`) the images pass unchanged: each is seen once, as the
    flip augmentation shows it. Batch normalization, dropout and every other layer in between
    see the doubled batch only at inference, where they use no batch statistics.
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            return inputs
        return keras.ops.concatenate([inputs, keras.ops.flip(inputs, axis=2)], axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch = input_shape[0]
        return (None if batch is None else 2 * batch, *input_shape[1:])


@keras.saving.register_keras_serializable(package="tf_alexnet")
class TwinMean(keras.layers.Layer):
    """Test-time flips, second half: at inference, the mean of the batch's two halves.

    Undoes `MirrorTwins`' doubling: the class scores of `(2N, classes)` become `(N, classes)`,
    each the mean of an image's scores and its mirror image's. Logits stay logits (their mean)
    and probabilities stay probabilities (their mean sums to 1). In training, scores pass
    unchanged.
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            return inputs
        twins = keras.ops.reshape(inputs, (2, -1, *inputs.shape[1:]))
        return keras.ops.mean(twins, axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        batch = input_shape[0]
        return (None if batch is None else batch // 2, *input_shape[1:])


@keras.saving.register_keras_serializable(package="tf_alexnet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, computed by TensorFlow's fused kernel where it can be.

    Keras 3 normalizes with about ten separate ops per layer (moments, casts to float32 under a
    bf16 or float16 policy, broadcasts), which in the `mini` network's training step cost about
    a third of the ops' time on a 2-core CPU. `FusedBatchNormV3` (oneDNN's on CPUs, cuDNN's on
    GPUs) does the same in one op, keeps its statistics in float32 whatever the input dtype, and
    lets grappler fuse the ReLU after it. Same arguments, weights and results as Keras's layer
    (the moving variance is updated with the batch's biased variance, as Keras does); any case
    the kernel does not cover (other backends, channels-first or non-4D inputs, masks, renorm,
    synchronized statistics, epsilon below the kernel's 1.001e-5) runs Keras's own code.

    Under a `tf.distribute` strategy with several replicas, each replica still normalizes with
    its own share of the batch (as Keras's layer does unless `synchronized=True`), but the moving
    statistics follow the whole global batch, so every replica keeps the same ones. Keras's
    layer updates each replica's copy from its own share: after `MirroredStrategy` training the
    copies differ, an image's prediction depends on the replica that computes it, and a saved
    model keeps the first replica's.
    """

    MIN_FUSED_EPSILON = 1.001e-5
    """`FusedBatchNormV3` raises smaller epsilons to this; such layers keep Keras's code."""

    def fuses(self, inputs: Any, mask: Any = None) -> bool:
        """Whether a call on `inputs` runs the fused kernel."""
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and not (self.renorm or self.synchronized)
            and self.epsilon >= self.MIN_FUSED_EPSILON
            and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16")
        )

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not self.fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # here: Keras's other backends never import TensorFlow

        def float32(variable: Any) -> Any:
            # The kernel's parameters and statistics are float32 whatever the input's dtype
            # (they are bfloat16 or float16 variables under a plain "bfloat16" policy).
            return tf.cast(variable, tf.float32)

        channels = inputs.shape[-1]
        scale = float32(self.gamma) if self.scale else tf.ones([channels])
        offset = float32(self.beta) if self.center else tf.zeros([channels])
        if not (training and self.trainable):
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=scale,
                offset=offset,
                mean=float32(self.moving_mean),
                variance=float32(self.moving_variance),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
            return tf.cast(outputs, self.compute_dtype)
        empty = tf.zeros([0])
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=scale,
            offset=offset,
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the unbiased (Bessel-corrected) batch variance; Keras's moving
        # variance follows the biased one, which the kernel normalizes with.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = variance * tf.maximum(count - 1.0, 1.0) / count
        mean, variance = _global_batch_moments(mean, variance, count)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            updated = float32(moving) * self.momentum + batch * (1.0 - self.momentum)
            moving.assign(tf.cast(updated, moving.dtype))
        return tf.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="tf_alexnet")
class ExportedPixels(keras.layers.TFSMLayer):
    """An export's pixels signature as a layer (`tf_alexnet.load_exported` makes it): a
    `TFSMLayer` that refuses images the signature does not take with a `ValueError` naming the
    dtype and shape it expects and those received, where TensorFlow's function binding raised
    a long TypeError ("Can not cast TensorSpec(...)") with the tensor's values. The check reads
    static shapes and dtypes only: calls that fit run the signature as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import tensorflow as tf

        super().__init__(*args, **kwargs)
        function = self.call_endpoint_fn  # a restored tf.function, or a signature
        signature = getattr(function, "input_signature", None) or getattr(
            function, "structured_input_signature", None
        )
        specs = [spec for spec in tf.nest.flatten(signature) if isinstance(spec, tf.TensorSpec)]
        self._images_spec = specs[0] if len(specs) == 1 else None

    def call(self, inputs: Any, training: bool = False, **kwargs: Any) -> Any:
        self._check_images(inputs)
        return super().call(inputs, training=training, **kwargs)

    def compute_output_spec(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # On a `keras.Input`: refused here, before Keras traces `call` and wraps the refusal
        # in "Could not automatically infer the output shape / dtype".
        self._check_images(inputs)
        return super().compute_output_spec(inputs, *args, **kwargs)

    def _check_images(self, inputs: Any) -> None:
        import tensorflow as tf

        spec = self._images_spec
        if spec is None or not (tf.is_tensor(inputs) or keras.utils.is_keras_tensor(inputs)):
            return  # another signature, or several inputs: TensorFlow checks them
        dtype, shape = tf.as_dtype(inputs.dtype), tf.TensorShape(inputs.shape)
        if dtype == spec.dtype and shape.is_compatible_with(spec.shape):
            return
        expected = _shape_text(spec.shape)
        if dtype != spec.dtype and dtype.is_integer:
            hint = f" (integer pixels: scale them, `tf.cast(images, tf.{spec.dtype.name}) / 255`)"
        elif shape.rank == len(spec.shape) - 1 and shape.is_compatible_with(spec.shape[1:]):
            hint = " (one image without its batch axis: pass images[None])"
        else:
            hint = ""
        raise ValueError(
            f"The exported model {str(self.filepath)!r} expects a batch of images of dtype "
            f"{spec.dtype.name} and shape {expected}: pixels in [0, 1]{hint}. "
            "`tf_alexnet.preprocess_input(images, "
            f"{tuple(spec.shape[1:])})` scales, resizes and converts images to that. "
            f"Received: images of dtype {dtype.name} and shape {_shape_text(shape)}"
        )


def _shape_text(shape: Any) -> str:
    """`(batch, 28, 28, 1)`: a TensorShape with None as the batch axis's name."""
    dims = [d if d is not None else ("batch" if i == 0 else "None") for i, d in enumerate(shape)]
    return f"({', '.join(map(str, dims))})"


def _global_batch_moments(mean: Any, variance: Any, count: Any) -> tuple[Any, Any]:
    """The mean and biased variance of the global batch, from each replica's share's (`count`
    values per channel); the share's own where one replica computes the whole batch.

    The variance is pooled as the mean of the shares' variances plus the spread of their means
    about the global mean, which keeps float32 exact where the means are large.
    """
    import tensorflow as tf

    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return mean, variance
    total_sum, total_count = replica.all_reduce(
        tf.distribute.ReduceOp.SUM, [tf.math.multiply_no_nan(mean, count), count]
    )
    global_mean = tf.math.divide_no_nan(total_sum, total_count)
    spread = variance + tf.square(mean - global_mean)
    total_spread = replica.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.math.multiply_no_nan(spread, count)
    )
    return global_mean, tf.math.divide_no_nan(total_spread, total_count)
