"""Model contracts for every variant: shapes, parameters, initialization, arguments, saving."""

import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_alexnet import AlexNet, LocalResponseNormalization, min_input_size
from tf_alexnet.model import format_summary

D2L_SHAPES = {
    "conv1": (54, 54, 96),
    "pool1": (26, 26, 96),
    "conv2": (26, 26, 256),
    "pool2": (12, 12, 256),
    "conv3": (12, 12, 384),
    "conv4": (12, 12, 384),
    "conv5": (12, 12, 256),
    "pool5": (5, 5, 256),
    "flatten": (6400,),
    "fc6": (4096,),
    "fc7": (4096,),
    "predictions": (10,),
}


def _output_shapes(model):
    return {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}


def test_d2l_matches_the_chapter():
    model = AlexNet()
    shapes = _output_shapes(model)
    assert {name: shapes[name] for name in D2L_SHAPES} == D2L_SHAPES
    assert model.count_params() == 46_764_746
    assert model.input_shape == (None, 224, 224, 1)
    assert model.name == "alexnet"
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)


def test_paper_matches_the_2012_network():
    model = AlexNet(input_shape=(227, 227, 3), classes=1000, variant="paper")
    shapes = _output_shapes(model)
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["flatten"] == (9216,)
    assert model.count_params() == 60_965_224
    assert [
        layer.name for layer in model.layers if isinstance(layer, LocalResponseNormalization)
    ] == [
        "norm1",
        "norm2",
    ]
    groups = {layer.name: layer.groups for layer in model.layers if "conv" in layer.name}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    biases = {
        layer.name: set(np.unique(layer.get_weights()[1]))
        for layer in model.layers
        if len(layer.get_weights()) == 2
    }
    assert biases == {
        "conv1": {0.0},
        "conv2": {1.0},
        "conv3": {0.0},
        "conv4": {1.0},
        "conv5": {1.0},
        "fc6": {1.0},
        "fc7": {1.0},
        "predictions": {0.0},
    }
    kernel = model.get_layer("fc6").get_weights()[0]
    assert abs(kernel.std() - 0.01) < 0.001


@pytest.mark.parametrize("size", [28, 32, 64])
def test_mini_trains_on_small_inputs(size):
    model = AlexNet(input_shape=(size, size, 1), variant="mini")
    if size == 28:
        assert model.count_params() == 1_006_250
        assert model.get_layer("pool5").output.shape[1:] == (4, 4, 64)
    images = tf.random.uniform((4, size, size, 1))
    logits = model(images, training=True)
    assert logits.shape == (4, 10)
    assert np.all(np.isfinite(logits.numpy()))


def _widths(model):
    return {
        layer.name: layer.filters if hasattr(layer, "filters") else layer.units
        for layer in model.layers
        if layer.name.startswith(("conv", "fc")) and not layer.name.endswith(("_bn", "_relu"))
    }


def test_width_scales_every_conv_and_hidden_layer():
    wide = AlexNet(input_shape=(28, 28, 1), variant="mini", width=1.5)
    assert _widths(wide) == {
        "conv1": 48, "conv2": 96, "conv3": 144, "conv4": 144, "conv5": 96, "fc6": 768, "fc7": 768
    }  # fmt: skip
    assert wide.count_params() == 2_258_170
    assert wide.get_layer("predictions").units == 10  # the classes are not scaled
    assert _widths(AlexNet(input_shape=(28, 28, 1), variant="mini", width=1)) == {
        "conv1": 32, "conv2": 64, "conv3": 96, "conv4": 96, "conv5": 64, "fc6": 512, "fc7": 512
    }  # fmt: skip


@pytest.mark.parametrize("width", [0.1, 0.3, 1.25, 2.7])
def test_scaled_widths_are_multiples_of_8_and_keep_the_groups(width):
    model = AlexNet(input_shape=(67, 67, 3), variant="paper", width=width)
    widths = _widths(model)
    assert all(count % 8 == 0 and count >= 8 for count in widths.values()), widths
    declared = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256}
    for name, count in declared.items():
        assert abs(widths[name] - count * width) <= 4, (name, widths[name])
    assert model.get_layer("conv4").groups == 2
    assert model(tf.random.uniform((1, 67, 67, 3))).shape == (1, 10)


@pytest.mark.parametrize("width", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_width_is_refused(width):
    with pytest.raises(ValueError, match=r"`width` should be a positive number\. Received: width="):
        AlexNet(variant="mini", input_shape=(28, 28, 1), width=width)


@pytest.mark.parametrize(
    ("width", "hint"),
    [(1e6, ""), (100, r" \(a multiplier: 1 for 100%\)"), (np.float32(4.5), ""), (9, "")],
)
def test_too_wide_is_refused_before_any_weight_is_made(width, hint):
    # width=1e6 ended in TensorFlow's out-of-memory error creating conv2's kernel, and
    # width=100 (a percentage) would build 10 billion parameters.
    message = rf"`width` should be at most 4{hint}: .* Received: width="
    with pytest.raises(ValueError, match=message):
        AlexNet(variant="mini", input_shape=(28, 28, 1), width=width)


def test_the_widest_width_builds():
    model = AlexNet(variant="mini", input_shape=(28, 28, 1), width=4)
    assert model.get_layer("fc6").units == 2048
    assert model.count_params() == 16_005_770


@pytest.mark.parametrize(
    ("pooling", "shape"), [(None, (5, 5, 256)), ("avg", (256,)), ("max", (256,))]
)
def test_feature_extractor_outputs(pooling, shape):
    model = AlexNet(include_top=False, pooling=pooling)
    assert model.output_shape[1:] == shape
    assert "predictions" not in [layer.name for layer in model.layers]


def test_softmax_classifier_returns_probabilities():
    model = AlexNet(
        input_shape=(32, 32, 3), variant="mini", classes=7, classifier_activation="softmax"
    )
    probabilities = model(tf.random.uniform((3, 32, 32, 3))).numpy()
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("path", ["tensorflow", "keras_ops"])
def test_lrn_matches_the_paper_formula(path):
    """TensorFlow's fused op, and the `keras.ops` formula Keras's other backends run."""
    x = np.random.default_rng(0).uniform(-3, 3, (1, 2, 2, 8)).astype("float32")
    layer = LocalResponseNormalization()
    got = np.asarray(layer(x) if path == "tensorflow" else layer._call_with_keras_ops(x))
    squares = x**2
    expected = np.empty_like(x)
    for c in range(8):
        window = squares[..., max(0, c - 2) : c + 3].sum(axis=-1)
        expected[..., c] = x[..., c] / (2.0 + 1e-4 * window) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth_radius": "2"}, "`depth_radius` should be a non-negative integer"),
        ({"depth_radius": 2.5}, "Received: depth_radius=2.5"),  # was truncated to 2
        ({"beta": "x"}, "`beta` should be a non-negative number. Received: beta='x'"),
        ({"bias": -1.0}, "`bias` should be a positive number. Received: bias=-1.0"),
        ({"alpha": float("nan")}, "Received: alpha=nan"),
    ],
)
def test_lrn_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LocalResponseNormalization(**kwargs)


def test_lrn_takes_4d_inputs_of_any_float_dtype():
    with pytest.raises(ValueError, match=r"4D inputs .* Received: input_shape=\(1, 4, 8\)"):
        LocalResponseNormalization()(np.ones((1, 4, 8), "float32"))
    x = np.random.default_rng(0).uniform(-3, 3, (1, 2, 2, 8))
    float64 = LocalResponseNormalization(dtype="float64")(x)  # TensorFlow's kernel has no float64
    assert float64.dtype == "float64"
    np.testing.assert_allclose(float64, LocalResponseNormalization()(x.astype("float32")), 1e-6)


def test_lrn_in_float16_neither_overflows_nor_breaks_xla():
    """Under a float16 policy (mixed_float16, the usual GPU one) the layer ran TensorFlow's
    float16 kernel: its sum of squares overflowed for activations above ~114 (every output 0),
    and XLA, Keras's default on a GPU, failed to compile it ("Seen floating point types of
    different precisions ... mixed precision is disallowed")."""
    x = np.full((1, 2, 2, 8), 200.0, "float32")
    expected = LocalResponseNormalization()(x)
    layer = LocalResponseNormalization(dtype="mixed_float16")
    assert layer(x).dtype == "float16"
    np.testing.assert_allclose(np.asarray(layer(x), "float32"), expected, rtol=1e-3)
    compiled = tf.function(layer, jit_compile=True)(x)
    np.testing.assert_allclose(np.asarray(compiled, "float32"), expected, rtol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"input_shape": (28, 28, 1)},
            "at least 67x67 for variant='d2l'. Received: input_shape=(28, 28, 1)",
        ),
        ({"variant": "vgg"}, "Received: variant='vgg'"),
        ({"pooling": "mean", "include_top": False}, "Received: pooling='mean'"),
        ({"input_shape": (224, 224, 4)}, "1 (grayscale) or 3 (RGB) channels"),
        ({"input_shape": (224, 224)}, "tuple of 3 positive integers"),
        ({"input_shape": (None, None, 1)}, "(height and width may be None with include_top=False)"),
        ({"include_top": False, "input_shape": (None, None, None)}, "3 positive integers"),
        (
            {"include_top": False, "input_shape": (None, 20, 1)},
            "at least 67x67 for variant='d2l'. Received: input_shape=(None, 20, 1)",
        ),
        ({"classes": 0}, "Received: classes=0"),
        ({"dropout": 1.0}, "Received: dropout=1.0"),
        ({"weights": "/nonexistent.keras"}, "Received: weights='/nonexistent.keras'"),
        # Wrong types a stranger passed: each got a raw TypeError, or was silently accepted.
        ({"classes": True}, "`classes` should be a positive integer. Received: classes=True"),
        ({"input_shape": (True, 224, 1)}, "Received: input_shape=(True, 224, 1)"),
        ({"include_top": "False"}, "True or False. Received: include_top='False'"),
        ({"dropout": "0.5"}, "`dropout` should be a number in [0, 1). Received: dropout='0.5'"),
        ({"dropout": None}, "Received: dropout=None"),
        ({"weights": True}, "Received: weights=True"),
        ({"weights": 0}, "Received: weights=0"),  # not file descriptor 0
        ({"weights": b"model.keras"}, "Received: weights=b'model.keras'"),
        ({"classifier_activation": "sofmax"}, "Received: classifier_activation='sofmax'"),
        ({"name": None}, "`name` should be a non-empty string. Received: name=None"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(
        ValueError, match="Received" if "Received" in message else "channels|integers"
    ):
        AlexNet(**kwargs)
    try:
        AlexNet(**kwargs)
    except ValueError as err:
        assert message in str(err)


def test_without_the_top_height_and_width_may_be_any_size():
    """As in `keras.applications`: a feature extractor for images of any size."""
    model = AlexNet(include_top=False, pooling="avg", variant="mini", input_shape=(None, None, 3))
    assert model.input_shape == (None, None, None, 3) and model.output_shape == (None, 64)
    for height, width in ((28, 28), (64, 40)):
        assert model(np.zeros((2, height, width, 3), "float32")).shape == (2, 64)
    fixed = AlexNet(include_top=False, pooling="avg", variant="mini", input_shape=(28, 28, 3))
    fixed.set_weights(model.get_weights())  # the same layers and weights as a fixed size
    x = np.random.default_rng(0).random((2, 28, 28, 3), "float32")
    np.testing.assert_allclose(fixed(x), model(x), atol=1e-5)
    assert re.search(r"^pool5 +MaxPooling2D +\?x\?x64 +0$", format_summary(model), re.M)


def test_input_tensor_builds_on_a_given_tensor(tmp_path):
    """`input_tensor`, as in `keras.applications`: the network on a tensor the user made, the
    model's inputs being the ones that tensor comes from; weights go to the network's own
    layers, not to those before it."""
    trained = AlexNet(input_shape=(32, 32, 1), variant="mini")
    trained.save(tmp_path / "trained.keras")
    raw = keras.Input((32, 32, 1), name="raw_pixels")
    scaled = keras.layers.Rescaling(1 / 255, name="scale")(raw)
    shifted = keras.layers.Conv2D(1, 1, name="mix", use_bias=False)(scaled)  # with weights
    model = AlexNet(
        input_tensor=shifted, variant="mini", weights=tmp_path / "trained.keras", name="on_top"
    )
    assert model.inputs == [raw] and model.input is raw and model.output_shape == (None, 10)
    assert [layer.name for layer in model.layers[:4]] == ["raw_pixels", "scale", "mix", "conv1"]
    np.testing.assert_array_equal(
        model.get_layer("conv1").get_weights()[0], trained.get_layer("conv1").get_weights()[0]
    )
    assert model.layers[2].get_weights()[0].shape == (1, 1, 1, 1)  # left as it was made
    model.layers[2].set_weights([np.ones((1, 1, 1, 1), "float32")])
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(model(pixels), trained(pixels / 255), rtol=1e-4, atol=1e-5)

    features = AlexNet(input_tensor=keras.Input((64, 48, 3)), include_top=False, variant="mini")
    assert features.input_shape == (None, 64, 48, 3)
    assert AlexNet(input_tensor=keras.Input((67, 67, 1))).input_shape == (None, 67, 67, 1)
    assert AlexNet(variant="mini", input_shape=None).input_shape == (None, 224, 224, 1)
    with pytest.raises(ValueError, match=r"Received: input_shape=\(32, 32, 3\), input_tensor"):
        AlexNet(input_tensor=raw, input_shape=(32, 32, 3), variant="mini")
    with pytest.raises(ValueError, match="`input_tensor` should be a Keras tensor"):
        AlexNet(input_tensor=np.zeros((1, 32, 32, 1)), variant="mini")
    # Messages name the tensor's shape, not an `input_shape` the user never passed.
    with pytest.raises(ValueError, match=r"`input_tensor.shape\[1:\]` should have 1 \(grayscale\)"):
        AlexNet(input_tensor=keras.Input((32, 32, 2)), variant="mini")
    with pytest.raises(
        ValueError, match=r"may be None with include_top=False\). Received: input_t"
    ):
        AlexNet(input_tensor=keras.Input((None, None, 1)), variant="mini")
    with pytest.raises(ValueError, match=r"Received: input_tensor.shape\[1:\]=\(20, 20, 1\)"):
        AlexNet(input_tensor=keras.Input((20, 20, 1)))


def test_numpy_integers_are_accepted():
    """A class count or shape computed with NumPy (`labels.max() + 1`) is an integer too."""
    model = AlexNet(
        input_shape=tuple(np.array([28, 28, 1])), classes=np.int64(5), variant="mini", width=0.25
    )
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 5)


def test_input_shape_takes_tensor_shapes_and_numpy_arrays():
    """`input_shape=images.shape[1:]` of a tf.Tensor, or a dataset's `element_spec.shape`, is a
    `tf.TensorShape`: `keras.applications` takes it, and AlexNet refused it as "not a tuple of 3
    positive integers"; a 1D numpy array likewise."""
    images = tf.zeros((2, 28, 28, 1))
    spec = tf.data.Dataset.from_tensor_slices(images).element_spec
    for shape in (images.shape[1:], spec.shape, np.array([28, 28, 1])):
        model = AlexNet(input_shape=shape, variant="mini", width=0.25)
        assert model.input_shape == (None, 28, 28, 1)
    features = AlexNet(
        input_shape=tf.TensorShape([None, None, 3]), include_top=False, variant="mini", width=0.25
    )
    assert features.input_shape == (None, None, None, 3)
    raw = keras.Input((28, 28, 1))
    assert AlexNet(input_tensor=raw, input_shape=np.array([28, 28, 1]), variant="mini").inputs
    with pytest.raises(ValueError, match=r"Received: input_shape=TensorShape\(None\)"):
        AlexNet(input_shape=tf.TensorShape(None), variant="mini")
    with pytest.raises(ValueError, match=r"input_shape=array\(\[\[28"):
        AlexNet(input_tensor=raw, input_shape=np.array([[28, 28, 1]]), variant="mini")


@pytest.mark.parametrize("variant", ["d2l", "paper"])
def test_any_size_feature_extractor_refuses_too_small_images_clearly(tmp_path, variant):
    """With `input_shape=(None, None, 3)` the size is known only when called: a 40 px image
    killed the process (SIGFPE in oneDNN's pooling), a 60 px one failed in oneDNN with "could
    not create a descriptor", and without oneDNN the features were NaN."""
    features = AlexNet(
        include_top=False, pooling="avg", input_shape=(None, None, 3), variant=variant, width=0.125
    )
    message = f"at least 67x67 for variant='{variant}'"
    for size in (10, 40, 66):
        images = np.zeros((1, size, size + 5, 3), "float32")
        with pytest.raises(ValueError, match=rf"{message}\. Received: images of {size}x"):
            features(images)
        with pytest.raises(ValueError, match=message):
            features.predict(images, verbose=0)
    graph = tf.function(features, input_signature=[tf.TensorSpec([None, None, None, 3])])
    # (TensorFlow's error text escapes the quotes.)
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"67x67 for variant=\W+{variant}"):
        graph(tf.zeros([1, 40, 80, 3]))
    for size in (67, 90):
        assert np.all(np.isfinite(graph(tf.zeros([1, size, size, 3]))))
        assert features(np.zeros((1, size, size, 3), "float32")).shape == (1, 32)
    features.save(tmp_path / "features.keras")
    with pytest.raises(ValueError, match=message):
        keras.saving.load_model(tmp_path / "features.keras")(np.zeros((1, 40, 40, 3), "float32"))
    fixed = AlexNet(include_top=False, input_shape=(67, 67, 3), variant=variant, width=0.125)
    assert "size_check" not in [layer.name for layer in fixed.layers]  # checked when built


def test_any_size_feature_extractor_keeps_its_size_check_under_jit_compile(tmp_path):
    """XLA drops the run-time size check: with `jit_compile=True` (Keras's default on a GPU)
    and batches of varying sizes (traced as unknown), a too-small image gave NaN features
    where the same model without XLA raised."""
    features = AlexNet(
        include_top=False, pooling="avg", input_shape=(None, None, 3), variant="d2l", width=0.125
    )
    features.save(tmp_path / "features.keras")
    sizes = (80, 90, 100, 70, 30)

    def batches():
        for size in sizes:
            yield np.ones((1, size, 90, 3), "float32")

    data = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((None, None, 90, 3))
    )
    for model in (features, keras.saving.load_model(tmp_path / "features.keras")):
        with pytest.warns(UserWarning, match="support `jit_compile=True`"):
            model.compile(jit_compile=True)
        assert not model.jit_compile
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="at least 67x67"):
            model.predict(data, verbose=0)


def test_integer_input_tensor_is_refused_when_built():
    with pytest.raises(ValueError, match=r"floating-point pixels .* Received: .*dtype uint8"):
        AlexNet(input_tensor=keras.Input((28, 28, 1), dtype="uint8"), variant="mini")
    scaled = keras.layers.Rescaling(1 / 255)(keras.Input((28, 28, 1), dtype="uint8"))
    model = AlexNet(input_tensor=scaled, variant="mini", width=0.25)
    assert model.predict(np.zeros((1, 28, 28, 1), np.uint8), verbose=0).shape == (1, 10)


def test_min_input_sizes():
    assert min_input_size("d2l") == 67
    assert min_input_size("paper") == 67
    AlexNet(input_shape=(67, 67, 1))  # the smallest accepted input builds


def test_the_variant_tables_import_first_and_without_tensorflow():
    """`from tf_alexnet.variants import min_input_size` as a program's first import was a
    circular ImportError: the tables imported Keras, whose import hook loads the layers, which
    import the half-loaded tables."""
    code = (
        "import sys\n"
        "from tf_alexnet.variants import min_input_size\n"
        "import tf_alexnet\n"
        "print(min_input_size('d2l'), tf_alexnet.min_input_size('mini'))\n"
        "print('tensorflow' in sys.modules)\n"
        "import keras\n"  # the hook still registers the custom layers afterwards
        "print('tf_alexnet>FusedBatchNormalization' in keras.saving.get_custom_objects())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["67", "1", "False", "True"], result.stderr[-2000:]


def test_weights_from_keras_file_seed_a_feature_extractor(tmp_path):
    trained = AlexNet(input_shape=(32, 32, 1), variant="mini")
    path = tmp_path / "trained.keras"
    trained.save(path)
    features = AlexNet(
        include_top=False, pooling="avg", input_shape=(32, 32, 1), variant="mini", weights=path
    )
    assert [layer.name for layer in features.layers if layer.weights][-1] == "conv5_bn"
    for layer in (layer for layer in features.layers if layer.weights):
        for got, expected in zip(
            layer.get_weights(), trained.get_layer(layer.name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, expected)

    with pytest.raises(ValueError, match="expects weights of shapes"):
        AlexNet(input_shape=(32, 32, 1), variant="mini", width=2.0, weights=path)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="Layer 'conv1' has no counterpart"):
        AlexNet(input_shape=(32, 32, 1), variant="mini", weights=tmp_path / "other.keras")
    # A classifier seeded from a feature extractor: "was it saved from another variant?" was
    # the wrong question.
    features.save(tmp_path / "features.keras")
    with pytest.raises(ValueError, match=r"'fc6' .* no classification top .*include_top=False"):
        AlexNet(input_shape=(32, 32, 1), variant="mini", weights=tmp_path / "features.keras")


def test_weights_from_a_model_that_holds_alexnet(tmp_path):
    """A transfer-learning model (AlexNet nested under a new head) or a `Sequential` around
    AlexNet was refused as "Layer 'conv1' has no counterpart ... another variant?"."""
    base = AlexNet(include_top=False, pooling="avg", input_shape=(32, 32, 1), variant="mini")
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, keras.layers.Dense(5)(base(inputs))).save(tmp_path / "head.keras")
    features = AlexNet(
        include_top=False, input_shape=(32, 32, 1), variant="mini", weights=tmp_path / "head.keras"
    )
    for name in ("conv1", "conv5", "conv5_bn"):
        for got, expected in zip(
            features.get_layer(name).get_weights(), base.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, expected)

    classifier = AlexNet(input_shape=(32, 32, 1), variant="mini", name="inner")
    wrapped = keras.Sequential([keras.Input((32, 32, 1)), classifier, keras.layers.Softmax()])
    wrapped.save(tmp_path / "wrapped.keras")
    copy = AlexNet(input_shape=(32, 32, 1), variant="mini", weights=tmp_path / "wrapped.keras")
    np.testing.assert_array_equal(
        copy.get_layer("predictions").get_weights()[0],
        classifier.get_layer("predictions").get_weights()[0],
    )

    twin_input = keras.Input((32, 32, 1))
    twins = [AlexNet(input_shape=(32, 32, 1), variant="mini", name=n)(twin_input) for n in "ab"]
    keras.Model(twin_input, keras.layers.Add()(twins)).save(tmp_path / "twins.keras")
    with pytest.raises(ValueError, match="more than one layer named 'conv1'"):
        AlexNet(input_shape=(32, 32, 1), variant="mini", weights=tmp_path / "twins.keras")


@pytest.mark.parametrize(("trained_on", "used_on"), [(1, 3), (3, 1)])
def test_gray_weights_seed_an_rgb_model_and_back(tmp_path, trained_on, used_on):
    """A Fashion-MNIST (gray) model refused to seed a feature extractor for RGB images: conv1's
    kernel is spread over the channels (or summed), so a gray image's features do not change."""
    trained = AlexNet(include_top=False, input_shape=(32, 32, trained_on), variant="mini")
    path = tmp_path / "trained.keras"
    trained.save(path)
    adapted = AlexNet(
        include_top=False, input_shape=(32, 32, used_on), variant="mini", weights=path
    )
    gray = np.random.default_rng(0).random((2, 32, 32, 1), np.float32)
    expected = trained(np.repeat(gray, trained_on, axis=3), training=False)
    got = adapted(np.repeat(gray, used_on, axis=3), training=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    kernel = adapted.get_layer("conv1").get_weights()[0]
    assert kernel.shape == (3, 3, used_on, 32)
    if used_on == 3:  # every colour counts, not only the first channel
        assert np.all(kernel[:, :, 0] == kernel[:, :, 2])


def test_damaged_or_mismatched_weight_files_are_reported_in_one_paragraph(tmp_path):
    """A damaged `.keras` file was reported as "File not found"; a `.weights.h5` file of
    another shape printed a misleading warning and the target variable's values."""
    junk = tmp_path / "junk.keras"
    junk.write_text("hello")
    with pytest.raises(ValueError, match=r"junk\.keras' is not one: it is damaged"):
        AlexNet(input_shape=(28, 28, 1), variant="mini", weights=junk)
    path = tmp_path / "mini.weights.h5"
    AlexNet(input_shape=(28, 28, 1), variant="mini").save_weights(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras's "Skipping nested container" warning
        with pytest.raises(ValueError) as caught:
            AlexNet(input_shape=(28, 28, 1), variant="mini", classes=3, weights=path)
    message = str(caught.value)
    assert "do not fit this architecture" in message and "value.shape=(512, 10)" in message
    assert "Target variable" not in message and "\n" not in message and len(message) < 1000


def test_damaged_weights_h5_files_are_not_called_another_architecture(tmp_path):
    """Random bytes and a truncated copy were both "do not fit this architecture: Unable to
    synchronously open file (file signature not found)", sending the user to check shapes."""
    path = tmp_path / "mini.weights.h5"
    AlexNet(input_shape=(28, 28, 1), variant="mini").save_weights(path)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(
        ValueError, match=r"garbage\.weights\.h5' is not a readable `\.weights\.h5`"
    ):
        AlexNet(input_shape=(28, 28, 1), variant="mini", weights=garbage)
    half = tmp_path / "half.weights.h5"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError) as caught:
        AlexNet(input_shape=(28, 28, 1), variant="mini", weights=half)
    assert "do not fit this architecture" not in str(caught.value)
    assert "damaged or truncated" in str(caught.value)


def test_weights_h5_round_trip(tmp_path):
    source = AlexNet(input_shape=(28, 28, 1), variant="mini")
    path = tmp_path / "mini.weights.h5"
    source.save_weights(path)
    copy = AlexNet(input_shape=(28, 28, 1), variant="mini", weights=path)
    images = tf.random.uniform((2, 28, 28, 1))
    np.testing.assert_allclose(copy(images), source(images), atol=1e-6)


def test_mixed_precision_keeps_logits_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = AlexNet(input_shape=(28, 28, 1), variant="mini")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model(tf.zeros((1, 28, 28, 1))).dtype == tf.float32


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "variant", "custom_layer", "flips"),
    [
        ("tensorflow", "paper", ("norm1", "LocalResponseNormalization"), False),
        ("torch", "paper", ("norm1", "LocalResponseNormalization"), False),
        ("torch", "mini", ("conv1_bn", "FusedBatchNormalization"), False),
        ("torch", "mini", ("twin_mean", "TwinMean"), True),
    ],
)
def test_keras_round_trip_in_a_fresh_process(tmp_path, backend, variant, custom_layer, flips):
    """A saved model loads and computes the same in a fresh process, under TensorFlow and under
    another Keras backend (PyTorch here), where the LRN layer failed ("Can't call numpy() on
    Tensor that requires grad"); there it also trains and saves. The fused batch norm runs
    Keras's own code there; the test-time flip layers run on Keras's ops."""
    if backend == "torch":  # installed by .ci/run (the benchmarks' PyTorch), not by the package
        pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    model = AlexNet(input_shape=(67, 67, 3), variant=variant, test_time_flip=flips)
    images = np.random.default_rng(1).uniform(size=(2, 67, 67, 3)).astype("float32")
    path = tmp_path / "paper.keras"
    model.save(path)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", model(images).numpy())
    code = (
        "import sys, numpy as np, keras\n"
        "import tf_alexnet\n"
        f"assert keras.backend.backend() == {backend!r}\n"
        f"model = keras.models.load_model({str(path)!r})\n"
        f"assert type(model.get_layer({custom_layer[0]!r})).__name__ == {custom_layer[1]!r}\n"
        f"images = np.load({str(tmp_path / 'images.npy')!r})\n"
        "out = keras.ops.convert_to_numpy(model(images))\n"
        f"np.testing.assert_allclose(out, np.load({str(tmp_path / 'expected.npy')!r}), atol=1e-5)\n"
        "model.compile(optimizer='sgd', loss=keras.losses.SparseCategoricalCrossentropy(True))\n"
        "loss = model.fit(images, np.array([3, 7]), epochs=2, verbose=0).history['loss']\n"
        "assert np.isfinite(loss).all(), loss\n"
        # Loading, calling and training need no TensorFlow off it (Keras's `save` imports it).
        f"assert {backend == 'tensorflow'} or 'tensorflow' not in sys.modules, 'TF imported'\n"
        f"model.save({str(tmp_path / 'trained.keras')!r})\n"
        f"again = keras.models.load_model({str(tmp_path / 'trained.keras')!r})\n"
        "np.testing.assert_allclose(keras.ops.convert_to_numpy(again(images)), "
        "keras.ops.convert_to_numpy(model(images)), atol=1e-5)\n"
    )
    if backend != "tensorflow":  # a SavedModel layer: said in one sentence, not Keras's own
        code += (
            "try:\n"
            "    tf_alexnet.load_exported('models/alexnet')\n"
            "except ValueError as err:\n"
            "    assert 'which runs on TensorFlow only' in str(err), err\n"
            "else:\n"
            "    raise SystemExit('load_exported did not refuse')\n"
        )
    result = subprocess.run(
        [sys.executable, "-c", code + "print('ok')\n"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": backend},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def _mini(classes=2, activation="softmax", name="core", **kwargs):
    return AlexNet(
        variant="mini",
        input_shape=(32, 32, 3),
        classes=classes,
        classifier_activation=activation,
        name=name,
        **kwargs,
    )


def _outputs_of(case):
    """Models whose last layer is not the builder's own top, as users wrap it."""
    inputs = keras.Input((32, 32, 3))
    if case == "nested softmax":
        return keras.Model(inputs, _mini()(inputs))
    if case == "sequential softmax":
        return keras.Sequential(
            [keras.Input((32, 32, 3)), _mini(activation=None), keras.layers.Softmax()]
        )
    if case == "activation layer":
        return keras.Model(
            inputs, keras.layers.Activation("softmax")(_mini(activation=None)(inputs))
        )
    if case == "softmax then dropout":
        return keras.Model(inputs, keras.layers.Dropout(0.1)(_mini()(inputs)))
    if case == "nested logits":
        return keras.Model(inputs, _mini(activation=None)(inputs))
    if case == "sequential logits":
        return keras.Sequential([keras.Input((32, 32, 3)), _mini(activation=None)])
    if case == "Softmax() as activation":  # the builder took it for a softmax; the check did not
        return _mini(activation=keras.layers.Softmax())
    if case == "ReLU() as activation":
        return _mini(activation=keras.layers.ReLU())
    return _mini(activation=None if case == "logits" else "softmax")


@pytest.mark.parametrize(
    ("case", "probabilities"),
    [
        ("softmax", True),
        ("nested softmax", True),
        ("sequential softmax", True),
        ("activation layer", True),
        ("softmax then dropout", True),
        ("Softmax() as activation", True),
        ("logits", False),
        ("nested logits", False),
        ("sequential logits", False),
    ],
)
def test_outputs_probabilities_finds_the_softmax_in_nested_models(case, probabilities):
    """A nested model, a Sequential ending in Softmax() or an Activation("softmax") layer were
    taken for logits: predict, evaluate and export applied softmax a second time. A top built
    with `classifier_activation=keras.layers.Softmax()` was refused as neither logits nor
    softmax ("activation='<Softmax name=softmax, built=True>'")."""
    from tf_alexnet.model import outputs_probabilities

    assert outputs_probabilities(_outputs_of(case)) is probabilities


def test_an_activation_layer_given_as_the_top_activation_is_named_by_what_it_computes():
    from tf_alexnet.errors import UserError
    from tf_alexnet.model import outputs_probabilities

    with pytest.raises(
        UserError, match=r"Received: a last layer 'predictions' with activation='relu'"
    ):
        outputs_probabilities(_outputs_of("ReLU() as activation"))


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: _mini(activation="sigmoid"), "'sigmoid'"),
        (lambda: _mini(activation="relu"), "'relu'"),
        (
            lambda: keras.Sequential(
                [keras.Input((32, 32, 3)), _mini(activation=None), keras.layers.Activation("tanh")]
            ),
            "'tanh'",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((32, 32, 3)), _mini(activation=None), keras.layers.ReLU()]
            ),
            "'relu'",
        ),
    ],
)
def test_outputs_neither_logits_nor_softmax_are_refused_by_name(make, named):
    from tf_alexnet.errors import UserError
    from tf_alexnet.model import outputs_probabilities

    with pytest.raises(
        UserError, match=f"logits or softmax probabilities.*Received: .*{named}"
    ) as err:
        outputs_probabilities(make())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: AlexNet(
                variant="mini", input_shape=(None, None, 3), include_top=False, pooling="avg"
            ),
            r"fixed height and width.*Received: input_shape=\(None, None, None, 3\)",
        ),
        (
            lambda: AlexNet(
                variant="mini", input_shape=(32, 32, 3), include_top=False, pooling="avg"
            ),
            r"classification top.*'avg_pool'.*Received: output_shape=\(None, 64\)",
        ),
        (
            lambda: AlexNet(variant="mini", input_shape=(32, 32, 3), include_top=False),
            r"\(batch, classes\).*Received: output_shape=\(None, 4, 4, 64\)",
        ),
        (
            lambda: _mini(classes=1, activation=None),
            r"2 or more.*Received: output_shape=\(None, 1\)",
        ),
        (lambda: _mini(classes=1, activation="sigmoid"), r"Received: output_shape=\(None, 1\)"),
        (
            lambda: AlexNet(
                variant="mini",
                input_tensor=keras.layers.Rescaling(1 / 255)(
                    keras.Input((32, 32, 3), dtype="uint8")
                ),
            ),
            r"float pixels in \[0, 1\].*Received: input dtype=uint8",
        ),
    ],
)
def test_check_classifier_refuses_what_predict_export_and_evaluate_cannot_use(make, message):
    """A None-size model crashed in preprocessing (TypeError comparing None); a feature
    extractor was exported and predicted as a 64-class model."""
    from tf_alexnet.errors import UserError
    from tf_alexnet.model import check_classifier

    with pytest.raises(UserError, match=message) as err:
        check_classifier(make(), "it.keras")
    assert "\n" not in str(err.value) and "'it.keras'" in str(err.value)
    assert check_classifier(_outputs_of("nested softmax"), "ok.keras") is True
    assert check_classifier(_mini(activation=None), "ok.keras") is False


def test_variant_and_width_of_other_types():
    """`variant=["mini"]` raised TypeError (unhashable list); a numpy width was refused."""
    with pytest.raises(
        ValueError, match=r"`variant` should be one of .*Received: variant=\['mini'\]"
    ):
        AlexNet(variant=["mini"], input_shape=(28, 28, 1))
    model = AlexNet(variant="mini", input_shape=(28, 28, 1), width=np.float32(0.5))
    assert model.get_layer("conv1").filters == 16
    with pytest.raises(ValueError, match=r"Received: width=(np\.)?True"):
        AlexNet(variant="mini", input_shape=(28, 28, 1), width=np.bool_(True))
