"""The AlexNet builder used as a stranger's Keras code uses it: arguments that build a model
which cannot work are refused when it is built."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_alexnet import AlexNet


@pytest.mark.parametrize(
    "activation",
    ["softmax", keras.activations.softmax, keras.layers.Softmax(), keras.ops.softmax],
)
def test_one_class_softmax_is_refused(activation):
    """`classes=1, classifier_activation="softmax"` built a model that answered 1.0 for every
    image (a softmax over one score) and that no loss could train: the gradient is zero.
    `keras.ops.softmax` (a function other than `keras.activations.softmax`) slipped through."""
    with pytest.raises(
        ValueError, match=r"one class outputs 1\.0 for every image.* Received: classes=1, "
    ):
        AlexNet(
            input_shape=(28, 28, 1), variant="mini", classes=1, classifier_activation=activation
        )


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_one_class_logit_or_sigmoid_still_builds(activation):
    model = AlexNet(
        input_shape=(28, 28, 1), variant="mini", classes=1, classifier_activation=activation
    )
    scores = model.predict(np.random.default_rng(0).random((4, 28, 28, 1)), verbose=0)
    assert scores.shape == (4, 1) and len(np.unique(scores)) > 1
    # Without the top, `classes` and `classifier_activation` are ignored, as in keras.applications.
    features = AlexNet(
        include_top=False,
        input_shape=(28, 28, 1),
        variant="mini",
        classes=1,
        classifier_activation="softmax",
    )
    assert features.output_shape == (None, 4, 4, 64)


@pytest.fixture
def channels_first():
    """Keras's global image data format set to "channels_first", as some users set it (a
    PyTorch habit); restored afterwards."""
    before = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format(before)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_shape=(28, 28, 3), variant="mini", classes=37),
        dict(input_shape=(67, 67, 1), variant="d2l", width=0.1),
        dict(input_shape=(67, 80, 3), variant="paper", width=0.1, test_time_flip=True),
        dict(input_shape=(None, None, 3), variant="mini", include_top=False, pooling="avg"),
        dict(input_shape=(30, 20, 1), variant="mini", include_top=False, pooling="max"),
    ],
    ids=["mini", "d2l", "paper-flip", "mini-avg", "mini-max"],
)
def test_images_are_channels_last_whatever_keras_image_data_format_says(
    kwargs, channels_first, tmp_path
):
    """Under `keras.config.set_image_data_format("channels_first")` the layers took Keras's
    global default: `mini` silently read a (28, 28, 3) image as 28 channels of 28x3 pixels
    (conv1 output (None, 32, 28, 3)), d2l and paper failed in conv1 ("Computed output size
    would be zero or negative", kernel (11, 11, 224, ...)), and Flatten reordered fc6's
    inputs. The models take (height, width, channels), as documented, either way."""
    model = AlexNet(**kwargs)
    height, width, channels = (s or 28 for s in kwargs["input_shape"])
    conv1 = model.get_layer("conv1")
    assert conv1.output.shape[-1] == conv1.filters  # channels last
    assert conv1.kernel.shape[2] == channels
    # The same weights answer as they do under channels_last (Flatten's order included).
    model.save(tmp_path / "cf.keras")
    images = np.random.default_rng(1).random((2, height, width, channels), np.float32)
    expected = model.predict(images, verbose=0)
    keras.config.set_image_data_format("channels_last")
    same = AlexNet(**kwargs, weights=tmp_path / "cf.keras")
    np.testing.assert_allclose(same.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


@keras.saving.register_keras_serializable(package="tf_alexnet_tests")
def _registered_softmax(x):
    return keras.ops.softmax(x)


def _unregistered_softmax(x):
    return keras.ops.softmax(x)


class _UnregisteredSoftmax(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.softmax(inputs)


@pytest.mark.parametrize(
    "activation",
    [
        "softmax",
        "sigmoid",
        keras.activations.softmax,
        keras.ops.softmax,
        keras.layers.Softmax(),
        keras.layers.Activation("softmax"),
        keras.layers.ReLU(),
        _registered_softmax,
        tf.math.sigmoid,  # saved as 'sigmoid', loads as Keras's, the same values
    ],
    ids=[
        "'softmax'",
        "'sigmoid'",
        "activations.softmax",
        "ops.softmax",
        "Softmax()",
        "Activation('softmax')",
        "ReLU()",
        "registered function",
        "tf.math.sigmoid",
    ],
)
def test_an_accepted_activation_loads_back_from_the_saved_file(activation, tmp_path):
    model = AlexNet(
        input_shape=(16, 16, 1), variant="mini", width=0.125, classes=3,
        classifier_activation=activation,
    )  # fmt: skip
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(0).random((2, 16, 16, 1), dtype="float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("activation", "why", "instead"),
    [
        (tf.nn.softmax, "Keras knows no function 'softmax_v2'", "'softmax'"),
        (lambda x: keras.ops.softmax(x), "refuses to load a lambda", "a Keras activation's name"),
        (_unregistered_softmax, "no function '_unregistered_softmax'", "a Keras activation's"),
        (_UnregisteredSoftmax(), "no class '_UnregisteredSoftmax'", "a Keras activation's"),
        # Saved as 'gelu', it would load as keras.activations.gelu, the exact (not tanh) one.
        (keras.ops.gelu, "loads back as Keras's own 'gelu', a function computing other", "a "),
    ],
    ids=["tf.nn.softmax", "lambda", "unregistered function", "unregistered layer", "ops.gelu"],
)
def test_an_activation_a_saved_model_cannot_load_back_is_refused(activation, why, instead):
    """`tf.nn.softmax` or a lambda built a model whose `.keras` file did not load again
    ("could not be deserialized properly"): found only when loading it, after training."""
    with pytest.raises(ValueError) as info:
        AlexNet(
            input_shape=(16, 16, 1), variant="mini", width=0.125, classifier_activation=activation
        )
    message = str(info.value)
    assert message.startswith("`classifier_activation` should be one that a saved model loads back")
    assert why in message and f"Pass {instead}" in message, message
    assert "Received: classifier_activation=" in message


@pytest.mark.parametrize(
    "activation",
    [keras.layers.Softmax, lambda: keras.layers.Activation("softmax")],
    ids=["Softmax()", "Activation('softmax')"],
)
def test_a_layer_activation_keeps_the_top_float32_under_mixed_precision(activation, tmp_path):
    """Under `mixed_bfloat16`, `classifier_activation=keras.layers.Softmax()` computed the
    probabilities in bfloat16 (the layer's own policy) behind a top built float32 for a stable
    loss: the model's output said float32 and its values came back as bfloat16."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        given = activation()
        model = AlexNet(
            input_shape=(16, 16, 1), variant="mini", width=0.125, classes=3,
            classifier_activation=given,
        )  # fmt: skip
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert given.dtype_policy.name == "mixed_bfloat16"  # the caller's layer is left as it was
    images = np.random.default_rng(0).random((2, 16, 16, 1), dtype="float32")
    assert model.output.dtype == "float32"
    assert model(images).dtype == tf.float32
    model.save(tmp_path / "model.keras")
    assert keras.saving.load_model(tmp_path / "model.keras")(images).dtype == tf.float32


@pytest.mark.parametrize("include_top", [True, False])
def test_an_input_shape_with_its_batch_axis_gets_a_hint(include_top):
    """`AlexNet(input_shape=other.input_shape)` (batch axis included) was told that height and
    width may be None with include_top=False, about the batch axis's None, and so even with
    include_top=False; `preprocess_input` already named `model.input_shape[1:]`."""
    other = AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.125)
    with pytest.raises(ValueError) as info:
        AlexNet(input_shape=other.input_shape, variant="mini", include_top=include_top)
    message = str(info.value)
    assert "without its batch axis: `model.input_shape[1:]`" in message, message
    assert "may be None" not in message
    assert message.endswith("Received: input_shape=(None, 28, 28, 1)")
