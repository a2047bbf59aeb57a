"""The AlexNet builder, in the style of `keras.applications`.

Three variants share one builder and one layer-naming scheme (conv1..conv5, pool1, pool2,
pool5, fc6, fc7, predictions):

- `"d2l"`: the network of the "Deep Convolutional Neural Networks (AlexNet)" chapter of
  Dive into Deep Learning (https://d2l.ai/chapter_convolutional-modern/alexnet.html):
  no LRN, no channel groups, Glorot init, 46,764,746 parameters at 224x224x1 and 10 classes.
- `"paper"`: the 2012 network (Krizhevsky, Sutskever and Hinton, "ImageNet Classification
  with Deep Convolutional Neural Networks", NIPS 2012): LRN after conv1 and conv2, conv2/4/5
  in two channel groups, N(0, 0.01) init, bias 1 in conv2, conv4, conv5, fc6 and fc7;
  60,965,224 parameters at 227x227x3 and 1000 classes.
- `"mini"`: the chapter's exercise, "simplify the model to make training faster": the same
  5-conv / 3-overlapping-pool / 2-dense shape with narrower layers (32-64-96-96-64
  filters, 512 units), 3x3 kernels, stride 1, `same` pooling and batch normalization in
  place of LRN (`FusedBatchNormalization`: Keras's, on TensorFlow's fused kernel), for
  28-64 px inputs on a CPU (1,006,250 parameters at 28x28x1).

`width` scales any variant: every conv's filters and the fc6/fc7 units times `width`, rounded
to multiples of 8 (`width=1.0` is the variant as declared), up to `contract.MAX_WIDTH` (4.0).

The variants' layer tables, and the smallest input each takes, are in `tf_alexnet.variants`.
"""

from __future__ import annotations

import numbers
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.layers import (
    FusedBatchNormalization,
    LocalResponseNormalization,
    MinimumImageSize,
    MirrorTwins,
    TwinMean,
)
from tf_alexnet.saving import folder_hint
from tf_alexnet.variants import (
    POOL_SIZE,
    POOL_STRIDE,
    Conv,
    Norm,
    Pool,
    Variant,
    check_input_size,
    check_width,
    get_variant,
    min_input_size,
)

FIRST_CONV = "conv1"
"""Every variant's first layer: the one that reads the image's channels."""

TOP_LAYERS = ("fc6", "fc7", "predictions")
"""The layers with weights that `include_top=True` adds."""

DATA_FORMAT = "channels_last"
"""Every model takes `(height, width, channels)` images, whatever `keras.config.image_data_format()`
says: its layers are given this data format, not Keras's global default."""


def _is_integer(value: Any) -> bool:
    """A Python or NumPy integer, not a bool (`True` is an `int` to Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _check_input_shape(
    input_shape: Any, variant: str, include_top: bool, label: str = "input_shape"
) -> tuple[int | None, int | None, int]:
    """Height and width may be None (any size) without the top, as in `keras.applications`.

    `label` names where the shape came from in messages (`input_tensor.shape[1:]`).
    A `tf.TensorShape` (`images.shape[1:]`, a dataset's `element_spec.shape`) or a 1D numpy
    array counts as the tuple it holds, as `keras.applications` takes them."""
    input_shape = _as_shape_tuple(input_shape)
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(
            (_is_integer(d) and d > 0) or (d is None and i < 2 and not include_top)
            for i, d in enumerate(input_shape)
        )
    ):
        listed = isinstance(input_shape, tuple | list)
        if listed and len(input_shape) == 4 and input_shape[0] is None:
            hint = " (a model's input_shape without its batch axis: `model.input_shape[1:]`)"
        elif listed and None in input_shape:
            hint = " (height and width may be None with include_top=False)"
        else:
            hint = ""
        raise ValueError(
            f"`{label}` should be a tuple of 3 positive integers (height, width, channels)"
            f"{hint}. Received: {label}={input_shape!r}"
        )
    height, width, channels = (None if d is None else int(d) for d in input_shape)
    if channels not in (1, 3):
        raise ValueError(
            f"`{label}` should have 1 (grayscale) or 3 (RGB) channels. "
            f"Received: {label}={(height, width, channels)}"
        )
    known = [side for side in (height, width) if side is not None]
    if known:
        check_input_size(variant, min(known), f"{label}={(height, width, channels)}")
    return height, width, channels


def _as_shape_tuple(input_shape: Any) -> Any:
    """A `tf.TensorShape` of known rank or a 1D numpy array as a tuple; anything else as is."""
    if isinstance(input_shape, np.ndarray) and input_shape.ndim == 1:
        return tuple(input_shape.tolist())
    as_list = getattr(input_shape, "as_list", None)  # tf.TensorShape, without importing TF
    if callable(as_list) and not isinstance(input_shape, tuple | list):
        try:
            return tuple(as_list())
        except ValueError:  # unknown rank
            return input_shape
    return input_shape


def _check_arguments(include_top: Any, weights: Any, classes: Any, dropout: Any, name: Any) -> None:
    """The builder's scalar arguments; a ValueError says what was expected and received."""
    if not isinstance(include_top, bool | np.bool_):
        raise ValueError(
            f"`include_top` should be True or False. Received: include_top={include_top!r}"
        )
    if include_top and not (_is_integer(classes) and classes >= 1):
        raise ValueError(f"`classes` should be a positive integer. Received: classes={classes!r}")
    if not (
        isinstance(dropout, numbers.Real)
        and not isinstance(dropout, bool | np.bool_)
        and 0.0 <= float(dropout) < 1.0
    ):
        raise ValueError(f"`dropout` should be a number in [0, 1). Received: dropout={dropout!r}")
    if (
        isinstance(weights, str | os.PathLike)
        and isinstance(os.fspath(weights), str)
        and os.path.isdir(weights)
    ):
        raise ValueError(
            "`weights` should be None or the path of a `.keras` or `.weights.h5` file, and "
            f"{os.fspath(weights)!r} is a folder{folder_hint(os.fspath(weights))} "
            f"Received: weights={weights!r}"
        )
    if weights is not None and not (
        isinstance(weights, str | os.PathLike)
        and isinstance(os.fspath(weights), str)
        and os.path.isfile(weights)
    ):
        raise ValueError(
            "`weights` should be None or the path of an existing `.keras` or `.weights.h5` "
            f"file. Received: weights={weights!r}"
        )
    if not (isinstance(name, str) and name):
        raise ValueError(f"`name` should be a non-empty string. Received: name={name!r}")


def _check_activation(classifier_activation: Any) -> Any:
    """The top layer's activation function, from a name, a callable or None; a ValueError for
    one that a saved model could not load back (see `_reload_problem`)."""
    try:
        activation = keras.activations.get(classifier_activation)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "`classifier_activation` should be None (logits), the name of a Keras activation "
            "such as 'softmax', or a callable. "
            f"Received: classifier_activation={classifier_activation!r}"
        ) from err
    problem = _reload_problem(activation)
    if problem:
        name = str(getattr(activation, "__name__", ""))
        instead = next(
            (f"'{known}'" for known in ("softmax", "sigmoid") if name.startswith(known)),
            "a Keras activation's name ('softmax', 'sigmoid', ...)",
        )
        raise ValueError(
            f"`classifier_activation` should be one that a saved model loads back, and {problem}. "
            f"Pass {instead} instead; Keras's activations (`keras.activations.softmax`, "
            "`keras.ops.softmax`), a Keras layer such as `keras.layers.Softmax()`, or a function "
            "of your own registered with `@keras.saving.register_keras_serializable()` work too. "
            f"Received: classifier_activation={classifier_activation!r}"
        )
    return activation


_PROBE = np.linspace(-3.0, 3.0, 12, dtype="float32").reshape(2, 6)
"""Scores an activation is tried on, when it is saved as a name that loads back as another
function: the two must compute the same values."""


def _reload_problem(activation: Any) -> str:
    """Why a `.keras` file with `activation` in its top would not load back as the same model
    (empty when it would), found by the round trip Keras makes: `Dense.get_config` serializes
    the activation (a built-in's name, or the module and name of a function or layer) and
    loading deserializes it, in safe mode. Keras's own activations, `keras.ops` functions
    (saved by name: `keras.ops.softmax` loads as `keras.activations.softmax`), Keras layers and
    registered functions come back; `tf.nn.softmax` (saved as 'softmax_v2', unknown to
    Keras), a lambda (refused in safe mode), an unregistered function or layer do not, and a
    function saved under a built-in's name that computes other values (`keras.ops.gelu`,
    approximate, loads as the exact `keras.activations.gelu`) would load as another model."""
    if activation is keras.activations.linear:
        return ""
    if getattr(activation, "__name__", "") == "<lambda>":
        return "Keras refuses to load a lambda (Python code) unless told the file is trusted"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns that a lambda is unsafe to save
            config = keras.activations.serialize(activation)
            if isinstance(config, dict):
                restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
            else:
                restored = keras.activations.get(config)
    except Exception as err:  # Keras raises ValueError, TypeError, AttributeError...
        text = " ".join(str(err).split())
        unknown = re.search(r"Could not locate (class|function) '([^']+)'", text)
        if unknown:
            return (
                f"loading would fail, as Keras knows no {unknown.group(1)} "
                f"{unknown.group(2)!r} (neither its own nor a registered one)"
            )
        return f"Keras cannot save it ({type(err).__name__}: {text[:150]})"
    if restored is activation:
        return ""
    if isinstance(activation, keras.layers.Layer):
        if type(restored) is type(activation):
            return ""
        return f"it would load back as {type(restored).__name__}"
    try:
        same = np.allclose(
            keras.ops.convert_to_numpy(activation(keras.ops.convert_to_tensor(_PROBE))),
            keras.ops.convert_to_numpy(restored(keras.ops.convert_to_tensor(_PROBE))),
            atol=1e-6,
        )
    except Exception:  # it does not run on this backend's tensors
        same = False
    if same:
        return ""
    return (
        f"it is saved as {config!r}, which loads back as Keras's own "
        f"{getattr(restored, '__name__', restored)!r}, a function computing other values"
    )


def _check_input_dtype(input_tensor: Any) -> None:
    if input_tensor is not None and "float" not in keras.backend.standardize_dtype(
        input_tensor.dtype
    ):
        raise ValueError(
            "`input_tensor` should hold floating-point pixels in [0, 1]: cast or scale integer "
            "images first, e.g. with `keras.layers.Rescaling(1 / 255)`. "
            f"Received: input_tensor with dtype {input_tensor.dtype}"
        )


def _input_shape_of(input_shape: Any, input_tensor: Any) -> Any:
    """`input_shape`, else `input_tensor`'s shape, else the default; the two must agree."""
    if input_tensor is None:
        return contract.INPUT_SHAPE if input_shape is None else input_shape
    if not keras.utils.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` should be a Keras tensor: `keras.Input(...)` or a layer's output. "
            f"Received: input_tensor of type {type(input_tensor).__name__}"
        )
    shape = tuple(input_tensor.shape[1:])
    input_shape = _as_shape_tuple(input_shape)
    if input_shape is not None and not (
        isinstance(input_shape, tuple | list) and tuple(input_shape) == shape
    ):
        raise ValueError(
            f"`input_shape` and the shape of `input_tensor` differ: pass one of them. "
            f"Received: input_shape={input_shape!r}, input_tensor.shape={input_tensor.shape}"
        )
    return shape


def AlexNet(
    include_top: bool = True,
    weights: str | os.PathLike[str] | None = None,
    input_tensor: Any = None,
    input_shape: tuple[int | None, int | None, int] | None = None,
    pooling: str | None = None,
    classes: int = contract.NUM_CLASSES,
    classifier_activation: str | Callable[..., Any] | None = None,
    dropout: float = 0.5,
    variant: str = "d2l",
    width: float = 1.0,
    name: str = contract.MODEL_NAME,
    test_time_flip: bool = False,
) -> keras.Model:
    """Instantiates an AlexNet as a Keras functional model.

    The model expects pixels scaled to [0, 1] (see `tf_alexnet.contract.INPUT_RANGE`).
    See the module docstring for the variants and how they differ from the paper.

    Reference: Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NIPS 2012; Dive into Deep Learning, chapter 8.1.

    Args:
        include_top: whether to include the fc6, fc7 and predictions layers.
        weights: `None` (random initialization) or the path of a tf_alexnet `.keras` file
            (weights are copied by layer name, so a trained classifier can seed a
            feature extractor, and a model that holds an AlexNet, such as one with a new
            head, seeds one; a gray model seeds an RGB one and back, see
            `adapt_input_channels`) or of a `.weights.h5` file saved from the same
            architecture.
        input_tensor: optional Keras tensor (`keras.Input(...)` or a layer's output) to
            use as the image input: the network is built on it, and the model's inputs are
            the ones it comes from.
        input_shape: `(height, width, channels)`, channels 1 or 3 (default: the tensor's
            shape, else `(224, 224, 1)`); with `include_top=False`, height and width may be
            `None` (images of any size at least the variant's smallest input). Channels come
            last whatever `keras.config.image_data_format()` says.
        pooling: with `include_top=False`, `None` (4D pool5 output), `"avg"` or `"max"`
            (global pooling to a 2D feature vector).
        classes: number of classes of the top layer (2 or more with a softmax top).
        classifier_activation: activation of the top layer; `None` returns logits (use a
            `from_logits=True` loss), `"softmax"` returns probabilities. A function or layer
            must load back from a saved `.keras` file: Keras's activations (by name, from
            `keras.activations` or `keras.ops`), Keras layers (`keras.layers.Softmax()`) and
            registered functions do; `tf.nn.softmax`, lambdas and unregistered functions
            or layers raise a `ValueError`.
        dropout: dropout rate after fc6 and fc7, in [0, 1).
        variant: `"d2l"`, `"paper"` or `"mini"`.
        width: multiplier of the layers' widths (every conv's filters and the fc6/fc7 units,
            rounded to multiples of 8); `1.0` builds the variant as declared. At most 4.0
            (`tf_alexnet.contract.MAX_WIDTH`): parameters grow with its square, and `d2l` at
            width 4 already has 747 million (16 times its 46.8 million), 3 GB of float32
            weights; wider would only end in an out-of-memory error.
        name: the model's name.
        test_time_flip: with `include_top=True`, class scores at inference are the mean of an
            image's and its mirror image's (test-time augmentation: about twice the inference
            compute; training sees each image once). The `MirrorTwins` layer after the input
            and the `TwinMean` layer after `predictions` do it.

    Returns:
        A `keras.Model`.
    """
    spec = get_variant(variant).scaled(check_width(width))
    from_tensor = input_shape is None and input_tensor is not None
    input_shape = _check_input_shape(
        _input_shape_of(input_shape, input_tensor),
        variant,
        include_top,
        "input_tensor.shape[1:]" if from_tensor else "input_shape",
    )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` should be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    _check_arguments(include_top, weights, classes, dropout, name)
    if not isinstance(test_time_flip, bool | np.bool_):  # NumPy's too, as for include_top
        raise ValueError(
            f"`test_time_flip` should be True or False. Received: test_time_flip={test_time_flip!r}"
        )
    test_time_flip = bool(test_time_flip)
    if test_time_flip and not include_top:
        raise ValueError(
            "`test_time_flip=True` averages class scores, so it needs `include_top=True`. "
            "Received: include_top=False"
        )
    _check_input_dtype(input_tensor)
    activation = _check_activation(classifier_activation)
    softmax = _function_name(activation) == "softmax"
    if include_top and int(classes) == 1 and softmax:
        # A softmax over one class is 1 for every image, and no loss can train it.
        raise ValueError(
            "`classifier_activation='softmax'` with one class outputs 1.0 for every image: "
            "use 'sigmoid' (or None, logits) for a single yes/no score, or classes=2 with "
            "softmax. Received: classes=1, classifier_activation="
            f"{classifier_activation!r}"
        )

    inputs = keras.Input(shape=input_shape, name="image") if input_tensor is None else input_tensor
    x = inputs
    if None in input_shape[:2] and min_input_size(variant) > 1:
        # Sizes known only when called: too small an image must fail clearly, not in oneDNN.
        x = MinimumImageSize(variant, name="size_check")(x)
    if test_time_flip:
        x = MirrorTwins(name="mirror_twins")(x)
    for layer_spec in spec.features:
        x = _block(layer_spec, spec, x)

    if include_top:
        x = keras.layers.Flatten(data_format=DATA_FORMAT, name="flatten")(x)
        for i in (6, 7):
            x = keras.layers.Dense(
                spec.hidden_units,
                activation="relu",
                kernel_initializer=spec.kernel_initializer(),
                bias_initializer=keras.initializers.Constant(spec.hidden_bias),
                name=f"fc{i}",
            )(x)
            x = keras.layers.Dropout(float(dropout), name=f"drop{i}")(x)
        # Under a mixed-precision policy the top layer stays float32 for a stable loss.
        top_dtype = "float32" if keras.config.dtype_policy().name.startswith("mixed") else None
        x = keras.layers.Dense(
            int(classes),
            activation=_in_dtype(activation, top_dtype),
            kernel_initializer=spec.kernel_initializer(),
            dtype=top_dtype,
            name="predictions",
        )(x)
        if test_time_flip:
            x = TwinMean(dtype=top_dtype, name="twin_mean")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(data_format=DATA_FORMAT, name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(data_format=DATA_FORMAT, name="max_pool")(x)

    if input_tensor is None:
        model = keras.Model(inputs, x, name=name)
    else:
        sources = keras.utils.get_source_inputs(input_tensor)
        model = keras.Model(sources[0] if len(sources) == 1 else sources, x, name=name)
    if weights is not None:
        # Into the network's own layers only, not those that made `input_tensor`.
        load_weights_into(model if input_tensor is None else keras.Model(inputs, x), weights)
    return model


def _in_dtype(activation: Any, dtype: str | None) -> Any:
    """`activation`, or for an activation given as a layer (`keras.layers.Softmax()`), a copy
    computing in `dtype`: a layer computes in its own policy's dtype (bfloat16 under
    `mixed_bfloat16`) even inside a float32 Dense. The caller's layer is left as it is."""
    if (
        dtype is None
        or not isinstance(activation, keras.layers.Layer)
        or activation.weights
        or activation.compute_dtype == dtype
    ):
        return activation
    copy = type(activation).from_config(activation.get_config())
    copy.dtype_policy = dtype
    return copy


def _feature_layer(layer_spec: Conv | Pool | Norm, spec: Variant) -> keras.layers.Layer:
    if isinstance(layer_spec, Conv):
        return keras.layers.Conv2D(
            layer_spec.filters,
            layer_spec.kernel,
            strides=layer_spec.strides,
            padding=layer_spec.padding,
            data_format=DATA_FORMAT,
            groups=layer_spec.groups,
            activation="relu",
            kernel_initializer=spec.kernel_initializer(),
            bias_initializer=keras.initializers.Constant(layer_spec.bias),
            name=layer_spec.name,
        )
    if isinstance(layer_spec, Pool):
        return keras.layers.MaxPooling2D(
            POOL_SIZE,
            POOL_STRIDE,
            padding=layer_spec.padding,
            data_format=DATA_FORMAT,
            name=layer_spec.name,
        )
    return LocalResponseNormalization(name=layer_spec.name)


def _block(layer_spec: Conv | Pool | Norm, spec: Variant, x: Any) -> Any:
    """One feature layer; with batch norm (mini), a conv becomes conv -> batch norm -> relu."""
    if not (spec.batch_norm and isinstance(layer_spec, Conv)):
        return _feature_layer(layer_spec, spec)(x)
    x = keras.layers.Conv2D(
        layer_spec.filters,
        layer_spec.kernel,
        strides=layer_spec.strides,
        padding=layer_spec.padding,
        data_format=DATA_FORMAT,
        use_bias=False,
        kernel_initializer=spec.kernel_initializer(),
        name=layer_spec.name,
    )(x)
    # momentum 0.9: moving statistics settle within tens of steps, for short CPU runs.
    x = FusedBatchNormalization(momentum=0.9, name=f"{layer_spec.name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{layer_spec.name}_relu")(x)


def _passes_values_on(layer: keras.layers.Layer) -> bool:
    """A layer whose output, at inference, is its input or, for `TwinMean`, the mean of its
    input's halves (logits or probabilities as they came): the layer before it decides."""
    if isinstance(layer, keras.layers.Dropout | keras.layers.Identity | TwinMean):
        return True
    return isinstance(layer, keras.layers.Activation) and _activation_name(layer) == "linear"


def _activation_name(layer: keras.layers.Layer) -> str:
    """What `layer` applies last: "softmax", "linear" (nothing), or another activation's name."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.ReLU | keras.layers.LeakyReLU | keras.layers.ELU):
        return type(layer).__name__.lower()
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    return _function_name(getattr(layer, "activation", None))


def _function_name(function: Any) -> str:
    """What an activation computes ("softmax", "linear", ...), given as a function (Keras's,
    or `keras.ops.softmax`) or as a layer (`classifier_activation=keras.layers.Softmax()`)."""
    if function is None or function is keras.activations.linear:
        return "linear"
    if isinstance(function, keras.layers.Layer):
        name = _activation_name(function)
        known = name != "linear" or isinstance(
            function, keras.layers.Activation | keras.layers.Identity
        )
        return name if known else type(function).__name__
    if function is keras.activations.softmax:
        return "softmax"
    return str(getattr(function, "__name__", function))


def output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that computes `model`'s (first) output: inside nested models and Sequentials,
    and back past layers that pass their input on unchanged at inference (Dropout, ...)."""
    layer: Any = model
    while True:
        if isinstance(layer, keras.Model):
            try:
                tensor = layer.outputs[0]
            except (AttributeError, IndexError, TypeError, ValueError):  # a subclassed model
                if not layer.layers or not isinstance(layer.layers[-1], keras.Model):
                    return layer.layers[-1] if layer.layers else layer
                layer = layer.layers[-1]
                continue
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return layer
        producer = history.operation
        if isinstance(producer, keras.Model):
            layer = producer
            continue
        if not _passes_values_on(producer) or not producer._inbound_nodes:
            return producer
        inputs = producer._inbound_nodes[history.node_index].input_tensors
        if len(inputs) != 1:
            return producer
        layer, tensor = producer, inputs[0]


def outputs_probabilities(model: keras.Model, source: str | os.PathLike[str] | None = None) -> bool:
    """Whether the model ends in a softmax (its outputs are probabilities) rather than in logits.

    Its last layer is found inside nested models and Sequentials; a softmax is a `Softmax` or
    `Activation("softmax")` layer or a layer with `activation="softmax"`. Raises `UserError`
    for another final activation (sigmoid, relu, ...): its outputs are neither logits nor
    class probabilities, and a softmax over them would give wrong scores (`source`, the file
    the model came from, is named in the message).
    """
    last = output_layer(model)
    name = _activation_name(last)
    if name not in ("softmax", "linear"):
        where = "The model" if source is None else f"The model {os.fspath(source)!r}"
        raise UserError(
            f"{where} should output logits or softmax probabilities (a last layer without "
            "activation, or with softmax), as class scores are read from them. Received: a last "
            f"layer {last.name!r} with activation={name!r}"
        )
    return name == "softmax"


_FEATURE_LAYERS = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.Flatten,
)
"""Last layers of a feature extractor (`include_top=False`), not of a classifier."""


def check_classifier(model: keras.Model, source: str | os.PathLike[str]) -> bool:
    """Refuses (`UserError`, one line) a model that predict, evaluate and export cannot use:
    one whose input is not images of a fixed height and width with 1 or 3 channels, or whose
    output is not class scores `(batch, classes)` (2 or more) from a classification top, or
    neither logits nor softmax probabilities, or not one row per image (test-time flips with
    one of their two layers cut off). Returns `outputs_probabilities(model)`."""
    where = f"The model {os.fspath(source)!r}"
    input_shape = model.input_shape
    if not (
        isinstance(input_shape, tuple)
        and len(input_shape) == 4
        and all(_is_integer(side) for side in input_shape[1:3])
        and input_shape[3] in (1, 3)
    ):
        raise UserError(
            f"{where} should take images of a fixed height and width, with 1 or 3 channels "
            "(build it with an input_shape such as (32, 32, 3)). "
            f"Received: input_shape={input_shape}"
        )
    input_dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    if "float" not in input_dtype:
        # Fed float pixels in [0, 1], an integer input casts every one of them to 0 (or 1):
        # each image is scored as a black one, with no error.
        raise UserError(
            f"{where} should take float pixels in [0, 1], which predict, evaluate and export "
            f"feed it, but its input holds {input_dtype} (a model that scales integer images "
            "itself): cast to integers, every pixel would become 0. Build it on a float input "
            "(`keras.Input(shape)`, no Rescaling; for an AlexNet, `AlexNet(..., weights=path)` "
            f"copies its weights by layer name). Received: input dtype={input_dtype}"
        )
    output_shape = model.output_shape
    if not (
        isinstance(output_shape, tuple)
        and len(output_shape) == 2
        and _is_integer(output_shape[1])
        and output_shape[1] >= 2
    ):
        raise UserError(
            f"{where} should output class scores of shape (batch, classes), for 2 or more "
            f"classes (a classifier built with include_top=True). "
            f"Received: output_shape={output_shape}"
        )
    _check_flips_paired(model, where)
    last = output_layer(model)
    if isinstance(last, _FEATURE_LAYERS):
        raise UserError(
            f"{where} should end in a classification top, but it ends in its {last.name!r} "
            f"layer ({type(last).__name__}): a feature extractor (include_top=False) outputs "
            f"features, not class scores. Received: output_shape={output_shape}"
        )
    return outputs_probabilities(model, source)


def _flip_layers(model: keras.Model) -> tuple[list[MirrorTwins], list[TwinMean]]:
    """The `MirrorTwins` and `TwinMean` layers of `model`, those of nested models included."""
    twins: list[MirrorTwins] = []
    means: list[TwinMean] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner_twins, inner_means = _flip_layers(layer)
            twins += inner_twins
            means += inner_means
        elif isinstance(layer, MirrorTwins):
            twins.append(layer)
        elif isinstance(layer, TwinMean):
            means.append(layer)
    return twins, means


def has_test_time_flip(model: keras.Model) -> bool:
    """Whether `model` scores each image and its mirror image (its `MirrorTwins` layers)."""
    return bool(_flip_layers(model)[0])


def _check_flips_paired(model: keras.Model, where: str) -> None:
    """Refuses a model whose test-time flips are not paired: a `MirrorTwins` that doubles the
    batch at inference with no `TwinMean` to average it back (a flipping model cut at an inner
    layer, say to put a new head on fc7) answers 2N rows for N images, and a `TwinMean`
    without its `MirrorTwins` averages different images together."""
    twins, means = _flip_layers(model)
    if len(twins) == len(means):
        return
    if len(twins) > len(means):
        problem = (
            f"its {twins[0].name!r} layer (MirrorTwins) doubles the batch at inference with "
            "mirror images and no TwinMean layer averages them back"
        )
    else:
        problem = (
            f"its {means[0].name!r} layer (TwinMean) halves the batch at inference and no "
            "MirrorTwins layer doubled it"
        )
    raise UserError(
        f"{where} should answer one row of class scores per image, but {problem}: it was cut "
        "from a model with test-time flips. Pair them again (MirrorTwins after the input, "
        "TwinMean after the class scores; both in tf_alexnet.layers), or build the network "
        "without them from the file (AlexNet(..., weights=path) copies weights, not flips). "
        f"Received: {len(twins)} MirrorTwins and {len(means)} TwinMean layer(s)"
    )


def format_summary(model: keras.Model) -> str:
    """One line per layer: name, type, output shape, parameters; then the total."""
    rows = [("layer", "type", "output shape", "params")]
    for layer in model.layers:
        shape = "x".join("?" if d is None else str(d) for d in layer.output.shape[1:])
        rows.append((layer.name, type(layer).__name__, shape, f"{layer.count_params():,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"Total parameters: {model.count_params():,}")
    return "\n".join(lines)


def load_weights_into(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Loads weights from a `.keras` file (matched by layer name) or a `.weights.h5` file."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        _load_weights_file(model, path)
        return
    if not path.endswith(".keras"):
        raise ValueError(
            f"`weights` should be a `.keras` or `.weights.h5` file. Received: weights={path!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"`weights` should be a `.keras` file (a zip archive) saved by Keras, but {path!r} "
            "is not one: it is damaged, truncated, or another kind of file."
        )
    try:
        source = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise ValueError(_unreadable_model(path, err)) from err
    source_layers = _layers_by_name(source, path)
    for layer in model.layers:
        if not layer.weights:
            continue
        donor = source_layers.get(layer.name)
        if donor is None and layer.name in TOP_LAYERS:
            raise ValueError(
                f"Layer {layer.name!r} has no counterpart in {path!r}: it holds no "
                "classification top (saved with include_top=False?). Build with "
                "include_top=False to take its convolutional features, or seed from a "
                "classifier's `.keras` file."
            )
        if donor is None:
            raise ValueError(
                f"Layer {layer.name!r} has no counterpart in {path!r}: was it saved from "
                f"another variant? Layers with weights there: "
                f"{[name for name, lay in source_layers.items() if lay.weights]}"
            )
        values = donor.get_weights()
        if layer.name == FIRST_CONV:
            values[0] = adapt_input_channels(values[0], layer.weights[0].shape[2])
        expected = [tuple(w.shape) for w in layer.weights]
        received = [tuple(v.shape) for v in values]
        if expected != received:
            raise ValueError(
                f"Layer {layer.name!r} expects weights of shapes {expected}, but {path!r} holds "
                f"{received}. Use the input_shape, classes, variant and width it was trained "
                f"with (or include_top=False to keep only the convolutional features)."
            )
        layer.set_weights(values)


def _unreadable_model(path: str, err: Exception) -> str:
    """Why Keras could not read the model in `path`. Keras's remedies for objects of the user's
    own (`custom_objects=`, `safe_mode=False` "to the loading function") are arguments that
    `AlexNet` does not take: say what works here instead."""
    text = " ".join(str(err).split())
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if unknown:
        name = unknown.group(1)
        return (
            f"Could not read the model in {path!r}: it holds {name!r}, an object of your own "
            "that Keras does not know. Register it with "
            "`@keras.saving.register_keras_serializable()` and import it before building, or "
            f"build inside `with keras.saving.custom_object_scope({{{name!r}: {name}}}):`. "
            f"Received: {text[:300]}"
        )
    if "`Lambda` layer" in text and "safe_mode" in text:
        return (
            f"Could not read the model in {path!r}: it holds a `Lambda` layer of Python code, "
            "which Keras does not load in safe mode. If you trust the file, call "
            "`keras.config.enable_unsafe_deserialization()` before building."
        )
    return f"Could not read the model in {path!r}: {err}"


def _layers_by_name(model: keras.Model, path: str) -> dict[str, keras.Layer]:
    """`model`'s layers by name, those of models nested in it included (an AlexNet inside a
    transfer-learning model or a `Sequential`); a ValueError when two nested models share a name."""
    found = {layer.name: layer for layer in model.layers}
    nested: dict[str, keras.Layer] = {}
    for inner in (layer for layer in model.layers if isinstance(layer, keras.Model)):
        for name, layer in _layers_by_name(inner, path).items():
            other = nested.get(name)
            if other is not None and other is not layer and other.weights and layer.weights:
                raise ValueError(
                    f"{path!r} holds more than one layer named {name!r} (in nested models), so "
                    "the weights to copy are ambiguous. Save the AlexNet you want on its own."
                )
            if other is None or not other.weights:
                nested[name] = layer
    return {**nested, **found}


def _load_weights_file(model: keras.Model, path: str) -> None:
    """A `.weights.h5` file of the same architecture (variables matched in order, as Keras
    does); a mismatch is reported in one paragraph, without the variables' values."""
    import h5py  # type: ignore[import-untyped]

    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path!r} is not a readable `.weights.h5` file (HDF5): it is damaged, truncated, "
            "or another kind of file."
        )
    try:
        with warnings.catch_warnings():
            # Keras warns of "nested containers" on any mismatch; the error below says it all.
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(path)
    except OSError as err:  # h5py's: a truncated file ("truncated file: eof = ...")
        reason = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{path!r} could not be read as a `.weights.h5` file (damaged or truncated?): {reason}"
        ) from err
    except ValueError as err:
        # Keras appends the target variable's values; keep the message up to them.
        reason = " ".join(str(err).split("Target variable:")[0].split())
        raise ValueError(
            f"The weights in {path!r} do not fit this architecture: {reason[:600]} "
            "Use the input_shape, classes, variant and width they were saved with, or save "
            "the model as a `.keras` file, which seeds other shapes layer by layer."
        ) from err


def adapt_input_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A first convolution's kernel `[h, w, in, out]` made to read `channels` input channels.

    A kernel trained on gray images is spread over RGB (each channel a third of it); one
    trained on RGB images is summed to read gray. Either way a gray image, given as gray or
    as three equal channels, gets the same features as before. Other counts are returned as
    they are (and refused by the shape check).
    """
    received = kernel.shape[2]
    if (received, channels) == (1, 3):
        return np.repeat(kernel, 3, axis=2) / 3.0
    if (received, channels) == (3, 1):
        return kernel.sum(axis=2, keepdims=True)
    return kernel
