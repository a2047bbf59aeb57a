"""`decode_predictions` and `preprocess_input`: the input and output conventions."""

import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_alexnet
from tf_alexnet import contract
from tf_alexnet.predictions import decode_predictions, preprocess_input, softmax


def test_decode_probabilities_best_first_with_names():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    decoded = decode_predictions(probabilities, top=2, class_names=["cat", "dog", "fox"])
    assert decoded == [[(1, "dog", 0.6), (2, "fox", 0.3)], [(0, "cat", 0.5), (2, "fox", 0.3)]]
    # More than there are classes: all of them, as in `keras.applications`.
    assert len(decode_predictions(probabilities, top=10, class_names=list("abc"))[0]) == 3
    # numpy integers as `top`; scores a rounding above 1 are still probabilities.
    assert decode_predictions(probabilities, top=np.int64(1), class_names=("a", "b", "c")) == [
        [(1, "b", 0.6)],
        [(0, "a", 0.5)],
    ]
    assert decode_predictions([[1.0000001, 0.0]], top=1)[0][0][0] == 0
    # A numpy array of names: plain `str` names out (they were `np.str_`).
    name = decode_predictions(probabilities, top=1, class_names=np.array(["a", "b", "c"]))[0][0][1]
    assert type(name) is str and name == "b"
    # One-hot unsigned integers (whose negation wraps around): the one, not a zero.
    assert decode_predictions(np.array([[0, 1, 0]], np.uint8), top=1)[0][0][:2] == (1, "class_1")


def test_decode_takes_other_keras_backends_tensors():
    """Under Keras's PyTorch backend a model's output requires grad, and `np.asarray` on it
    raised "Can't call numpy() on Tensor that requires grad"."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    logits = torch.tensor([[0.5, 2.0, -1.0]], requires_grad=True) * 1.0
    top = decode_predictions(logits, top=2, class_names=["a", "b", "c"], from_logits=True)
    expected = decode_predictions(
        np.array([[0.5, 2.0, -1.0]]), top=2, class_names=["a", "b", "c"], from_logits=True
    )
    assert top == expected and [name for _, name, _ in top[0]] == ["b", "a"]


def test_decode_logits_matches_tensorflow_softmax_and_top_k():
    logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    decoded = decode_predictions(logits, top=3, from_logits=True)
    expected = tf.math.top_k(tf.nn.softmax(logits), k=3)
    assert [[i for i, _, _ in row] for row in decoded] == expected.indices.numpy().tolist()
    np.testing.assert_allclose(
        [[p for *_, p in row] for row in decoded], expected.values.numpy(), atol=1e-6
    )
    assert decoded[0][0][1] == contract.CLASS_NAMES[decoded[0][0][0]]  # 10 classes: Fashion-MNIST
    assert decode_predictions(np.zeros((1, 3)), top=1)[0][0][:2] == (0, "class_0")  # ties: lowest
    np.testing.assert_allclose(softmax([[1000.0, 1000.0]]), [[0.5, 0.5]])  # no overflow


@pytest.mark.parametrize(
    "preds, kwargs, message",
    [
        (np.ones(3), {}, r"2D array of shape \(samples, classes\). Received: preds.shape=\(3,\)"),
        (np.ones((1, 3)), {"class_names": ["a"]}, "one name per class \\(3\\). Received: 1"),
        (np.ones((1, 3)), {"top": 0}, "`top` should be a positive integer. Received: top=0"),
        (np.ones((1, 3)), {"top": 1.5}, "`top` should be a positive integer. Received: top=1.5"),
        (np.ones((1, 3)), {"top": "1"}, "positive integer. Received: top='1'"),
        (np.ones((1, 3)), {"top": True}, "positive integer. Received: top=True"),
        # A truthy string applied a softmax to probabilities, silently.
        (np.ones((1, 3)), {"from_logits": "no"}, "True or False. Received: from_logits='no'"),
        (np.ones((1, 3)), {"from_logits": None}, "True or False. Received: from_logits=None"),
        (np.array([[0.5, -0.25]]), {}, r"Pass from_logits=True. Received: preds.min\(\)=-0.25"),
        (np.array([[3.0, 0.5]]), {}, r"Pass from_logits=True. Received: .*preds.max\(\)=3"),
        (np.array([["0.5", "0.5"]]), {}, "numeric scores. Received: preds.dtype=<U3"),
        (np.array([[True, False]]), {}, "numeric scores. Received: preds.dtype=bool"),
        (np.array([[np.nan, 0.5]]), {}, "finite scores. Received: 1 NaN and 0 infinite"),
        (np.array([[np.inf, 0.5]]), {"from_logits": True}, "Received: 0 NaN and 1 infinite"),
        (
            np.ones((1, 3)),
            {"class_names": "abc"},
            "not a single string. Received: class_names='abc'",
        ),
        (
            np.ones((1, 3)),
            {"class_names": {0: "a", 1: "b", 2: "c"}},  # named the classes 0, 1, 2
            "not a mapping: .* Received: class_names of type dict",
        ),
        (
            np.ones((1, 3)),
            {"class_names": [1, 2, 3]},
            r"should be strings, one per class. Received: class_names with \['int'\] items",
        ),
    ],
)
def test_decode_refuses_what_it_cannot_answer(preds, kwargs, message):
    with pytest.raises(ValueError, match=message):
        decode_predictions(preds, **kwargs)


def test_preprocess_input_states_the_convention():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    batch = preprocess_input(rgb, input_shape=(28, 28, 1))
    assert batch.shape == (2, 28, 28, 1) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    # The same numbers as the exported signature's preprocessing of the same pixels.
    one = preprocess_input(rgb[0])
    assert one.shape == (1, contract.IMAGE_SIZE, contract.IMAGE_SIZE, contract.CHANNELS)
    gray = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_input(gray, (28, 28, 1))[0], gray / 255.0, atol=1e-6)
    np.testing.assert_allclose(
        preprocess_input(gray.astype(np.int64), (28, 28, 1)), preprocess_input(gray, (28, 28, 1))
    )
    np.testing.assert_allclose(preprocess_input(gray / 255.0, (28, 28, 1))[0], gray / 255.0)
    assert preprocess_input(gray, (28, 28, 3)).shape == (1, 28, 28, 3)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((28, 28, 1), 255.0), r"Float pixels should be in \[0, 1\].*Received: values in"),
        (np.full((28, 28, 1), 300), r"Integer pixels should be in \[0, 255\]"),
        (np.zeros((28, 28)), r"pass images\[\.\.\., None\]\)\. Received: images.shape=\(28, 28\)"),
        # A batch of gray images as `keras.datasets.fashion_mnist` gives them: a hint.
        (np.zeros((5, 28, 28), np.uint8), r"pass images\[\.\.\., None\]\)\. Received: images.sh"),
        (
            np.zeros((28, 28, 4), np.uint8),
            r"1 or 3 channels\. Received: images.shape=\(28, 28, 4\)",
        ),
        # Images of different sizes in a list: numpy's "setting an array element with a
        # sequence" came through as it was.
        (
            [np.zeros((28, 28, 1), np.uint8), np.zeros((20, 28, 1), np.uint8)],
            r"of one size: call it once per image .* Received: images of different shapes",
        ),
    ],
)
def test_preprocess_input_refuses_other_conventions(images, message):
    with pytest.raises(ValueError, match=message):
        preprocess_input(images, (28, 28, 1))


def test_preprocess_input_keeps_the_images_own_size_where_the_shape_says_none():
    """A feature extractor's `input_shape` (include_top=False) has None for height and width."""
    gray = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 1), dtype=np.uint8)
    np.testing.assert_allclose(preprocess_input(gray, (None, None, 1)), gray / 255.0, atol=1e-6)
    assert preprocess_input(gray[0], [None, None, 3]).shape == (1, 40, 30, 3)
    assert preprocess_input(gray, (None, 20, 1)).shape == (2, 40, 20, 1)
    assert preprocess_input(gray, (np.int64(20), 20, 1)).shape == (2, 20, 20, 1)


@pytest.mark.parametrize(
    "input_shape",
    [(28, 28), (28, 28, 1, 1), (28, 28, None), (28, 28, 2), (0, 28, 1), (28.5, 28, 1), "28"],
)
def test_preprocess_input_refuses_an_input_shape_it_cannot_meet(input_shape):
    message = (
        r"`input_shape` should be \(height, width, channels\): positive integers or None "
        r"for height and width, 1 or 3 channels. Received: input_shape="
    )
    with pytest.raises(ValueError, match=message + re.escape(repr(input_shape))):
        preprocess_input(np.zeros((28, 28, 1), np.uint8), input_shape)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((28, 28, 1), np.nan), r"Float pixels should be in \[0, 1\].*Received: 784 NaN"),
        (np.ones((28, 28, 1), bool), r"integer \(0-255\) or float \(\[0, 1\]\) pixels.*"),
        (np.ones((28, 28, 1), complex), r"Received: images.dtype=complex128"),
        (np.full((28, 28, 1), "a"), r"Received: images.dtype=<U1"),
    ],
)
def test_preprocess_input_refuses_what_is_not_a_pixel(images, message):
    """NaN passed the [0, 1] check (NaN compares false) and gave NaN pixels; bool arrays were
    read as integers (True: 1/255)."""
    with pytest.raises(ValueError, match=message):
        preprocess_input(images, (28, 28, 1))


def test_exported_from_the_package():
    assert tf_alexnet.decode_predictions is decode_predictions
    assert tf_alexnet.preprocess_input is preprocess_input
    for name in ("decode_predictions", "preprocess_input", "WarmUp"):
        assert name in tf_alexnet.__all__


def test_dir_lists_the_public_api_before_it_loads():
    """The public names load on first use (`__getattr__`); `dir()` and completion list them."""
    code = (
        "import sys, tf_alexnet; names = dir(tf_alexnet); "
        "print(sorted(set(tf_alexnet.__all__) - set(names)), 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[] False"  # all listed, nothing imported for it


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_decode_takes_16_bit_scores(dtype):
    """A model's own output under the global "bfloat16" policy was refused: ml_dtypes'
    bfloat16 has dtype.kind 'V' ("expects numeric scores")."""
    logits = tf.constant([[2.0, -1.0, 0.5]], dtype)
    top = decode_predictions(logits.numpy(), top=2, from_logits=True)
    assert [i for i, _, _ in top[0]] == [0, 2]
    np.testing.assert_allclose(top[0][0][2], softmax([[2.0, -1.0, 0.5]])[0, 0], atol=1e-3)
    probabilities = tf.nn.softmax(logits)
    assert decode_predictions(probabilities.numpy(), top=1)[0][0][0] == 0


def test_preprocess_input_maps_over_a_tf_data_pipeline():
    """`keras.applications`' `preprocess_input` works in `Dataset.map`; this one raised
    "NotImplementedError: Cannot convert a symbolic tf.Tensor (args_0:0) to a numpy array"."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 40, 30, 3), dtype=np.uint8)
    batches = tf.data.Dataset.from_tensor_slices(rgb).batch(2)
    mapped = np.concatenate(list(batches.map(lambda x: preprocess_input(x, (28, 28, 1)))))
    np.testing.assert_allclose(mapped, preprocess_input(rgb, (28, 28, 1)), atol=1e-6)
    as_floats = batches.map(lambda x: preprocess_input(tf.cast(x, tf.float32) / 255, (28, 28, 3)))
    np.testing.assert_allclose(
        np.concatenate(list(as_floats)), preprocess_input(rgb, (28, 28, 3)), atol=1e-5
    )
    own_size = batches.map(lambda x: preprocess_input(tf.cast(x, tf.int64), (None, None, 3)))
    np.testing.assert_allclose(next(iter(own_size)), rgb[:2] / 255.0, atol=1e-6)

    too_bright = tf.data.Dataset.from_tensors(np.full((1, 8, 8, 1), 2.0, np.float32))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"should be in \[0, 1\] \(pass"
    ) as err:
        list(too_bright.map(lambda x: preprocess_input(x, (8, 8, 1))))
    assert "NaN" not in str(err.value)  # it said "in [0, 1], not NaN" of values of 2.0
    rgba = tf.data.Dataset.from_tensors(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"1 or 3 channels. Received: images.shape=\(2, 8, 8, 4\)"):
        rgba.map(lambda x: preprocess_input(x, (8, 8, 1)))
