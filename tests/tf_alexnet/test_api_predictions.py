"""`decode_predictions` and `preprocess_input` given what a Keras user's own code hands them:
other backends' tensors, bfloat16 arrays, ragged lists, empty images."""

import re

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from tf_alexnet.predictions import decode_predictions, preprocess_input


def test_decode_takes_a_pytorch_bfloat16_tensor():
    """Under KERAS_BACKEND=torch and a "bfloat16" policy a model answers torch bfloat16
    tensors, which numpy cannot hold: "TypeError: Got unsupported ScalarType BFloat16"."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    scores = torch.tensor([[0.25, 0.75]], dtype=torch.bfloat16, requires_grad=True) * 1.0
    assert decode_predictions(scores, class_names=["a", "b"]) == [[(1, "b", 0.75), (0, "a", 0.25)]]


@pytest.mark.parametrize("kind", ["numpy", "tensorflow", "torch"])
def test_preprocess_takes_bfloat16_pixels(kind):
    """bfloat16 pixels in [0, 1] are float pixels: numpy's (ml_dtypes) and TensorFlow's were
    refused as "expects integer (0-255) or float ([0, 1]) pixels", PyTorch's raised a
    TypeError, although a `tf.function` took them."""
    pixels = np.linspace(0.0, 1.0, 2 * 4 * 4).reshape(2, 4, 4, 1)
    if kind == "numpy":
        images = pixels.astype(ml_dtypes.bfloat16)
    elif kind == "tensorflow":
        images = tf.constant(pixels, tf.bfloat16)
    else:
        torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
        images = torch.tensor(pixels, dtype=torch.bfloat16)
    out = preprocess_input(images, (4, 4, 1))
    assert out.dtype == np.float32 and out.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(out, pixels.astype(ml_dtypes.bfloat16).astype(np.float32))
    with pytest.raises(ValueError, match=r"Float pixels should be in \[0, 1\]"):
        preprocess_input((pixels * 255).astype(ml_dtypes.bfloat16), (4, 4, 1))


def test_preprocess_takes_a_pytorch_tensor_that_requires_grad():
    """`np.asarray` on it raised "Can't call numpy() on Tensor that requires grad"."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    images = torch.full((1, 4, 4, 3), 0.5, requires_grad=True) * 1.0
    out = preprocess_input(images, (2, 2, 3))
    np.testing.assert_allclose(out, np.full((1, 2, 2, 3), 0.5, np.float32), atol=1e-6)
    with pytest.raises(ValueError, match=r"Received: images.shape=\(4, 4\)"):
        preprocess_input(torch.zeros((4, 4), requires_grad=True) * 1.0, (2, 2, 1))


@pytest.mark.parametrize("shape", [(1, 0, 28, 1), (0, 5, 3), (2, 5, 0, 3)])
def test_preprocess_refuses_empty_images_with_a_value_error(shape):
    """An image of no pixels reached TensorFlow's resize: InvalidArgumentError "input image
    must be of non-zero size [Op:ScaleAndTranslate]"."""
    with pytest.raises(
        ValueError,
        match=re.escape(f"at least 1x1 pixels. Received: images.shape={shape}"),
    ):
        preprocess_input(np.zeros(shape, np.uint8), (28, 28, 1))
    # An empty batch of images is still an empty batch.
    assert preprocess_input(np.zeros((0, 5, 5, 1), np.uint8), (4, 4, 1)).shape == (0, 4, 4, 1)


def test_decode_refuses_rows_of_different_lengths_with_its_own_message():
    """numpy's "setting an array element with a sequence. The requested array has an
    inhomogeneous shape" was raised as it came, naming neither the function nor the fix."""
    with pytest.raises(
        ValueError, match=r"`decode_predictions` expects .*every row as long. Received: rows"
    ):
        decode_predictions([[0.1, 0.9], [1.0]])


def test_decode_refuses_a_softmax_over_one_logit():
    """One logit per image (a binary `classes=1` top) decoded with `from_logits=True` gave the
    score 1.0 to every image, whatever its logit."""
    with pytest.raises(
        ValueError, match=r"1\.0 for every image with one class.* Received: preds.shape=\(2, 1\)"
    ):
        decode_predictions(np.array([[-3.0], [2.0]]), from_logits=True)
    # As probabilities (a sigmoid's), one class decodes as it is.
    assert decode_predictions(np.array([[0.25], [0.75]])) == [
        [(0, "class_0", 0.25)],
        [(0, "class_0", 0.75)],
    ]


@pytest.mark.parametrize(
    "input_shape",
    [np.array([4, 6, 3]), tf.TensorShape([4, 6, 3]), tf.TensorShape([None, 6, 3])],
    ids=["numpy", "TensorShape", "TensorShape-None"],
)
def test_preprocess_takes_the_shapes_the_builder_takes(input_shape):
    """`AlexNet(input_shape=...)` takes a 1D numpy array and a `tf.TensorShape`
    (`images.shape[1:]`); `preprocess_input` refused the same values ("should be (height,
    width, channels) ... Received: input_shape=TensorShape([4, 6, 3])")."""
    out = preprocess_input(np.zeros((2, 8, 6, 1), np.uint8), input_shape)
    expected_height = 8 if input_shape[0] is None else 4
    assert out.shape == (2, expected_height, 6, 3) and out.dtype == np.float32
    with pytest.raises(ValueError, match=r"Received: input_shape=TensorShape\(None\)"):
        preprocess_input(np.zeros((2, 8, 6, 1), np.uint8), tf.TensorShape(None))
    with pytest.raises(ValueError, match=r"Received: input_shape=\(4, 6, 4\)"):
        preprocess_input(np.zeros((2, 8, 6, 1), np.uint8), np.array([4, 6, 4]))


def test_symbolic_keras_tensors_are_refused_for_what_they_are():
    """`preprocess_input(keras.Input(...))` said "expects an image or a batch of images of one
    size ... Received: images of different shapes": numpy's error for a KerasTensor was taken
    for a ragged list's (and `decode_predictions(model.output)` for ragged rows)."""
    import keras

    images = keras.Input((40, 40, 3), dtype="uint8")
    with pytest.raises(ValueError, match=r"a symbolic Keras tensor has none.* Received: images=<"):
        preprocess_input(images, (28, 28, 1))
    scores = keras.layers.Dense(3)(keras.Input((4,)))
    with pytest.raises(ValueError, match=r"a symbolic Keras tensor has none.* Received: preds=<"):
        decode_predictions(scores)
    # In a Lambda layer it gets a TensorFlow graph tensor, and works.
    pixels = keras.layers.Lambda(lambda t: preprocess_input(t, (28, 28, 1)))(images)
    model = keras.Model(images, pixels)
    out = model.predict(np.full((2, 40, 40, 3), 255, np.uint8), verbose=0)
    assert out.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_a_model_input_shape_with_its_batch_axis_gets_a_hint():
    """`preprocess_input(images, model.input_shape)` is the natural first try; the message
    said only that (height, width, channels) was expected."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "without its batch axis: `model.input_shape[1:]`). "
            "Received: input_shape=(None, 28, 28, 1)"
        ),
    ):
        preprocess_input(np.zeros((1, 28, 28, 1), np.uint8), (None, 28, 28, 1))
    with pytest.raises(ValueError, match=r"1 or 3 channels\. Received: input_shape=\(28, 28\)"):
        preprocess_input(np.zeros((1, 28, 28, 1), np.uint8), (28, 28))


def test_decode_refuses_a_dict_of_outputs_naming_the_scores_to_pass():
    """`decode_predictions(load_exported(path)(pixels))`, the exported layer's dict of
    outputs, was refused with "Received: preds.shape=()" (numpy holds a dict as one object)."""
    outputs = {"probabilities": tf.constant([[0.25, 0.75]]), "class_id": tf.constant([1])}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "not a dict of outputs: pass preds['probabilities']. "
            "Received: a dict with keys ['class_id', 'probabilities']"
        ),
    ):
        decode_predictions(outputs)
    with pytest.raises(
        ValueError, match=r"not a dict of outputs\. Received: a dict with keys \['a'\]"
    ):
        decode_predictions({"a": np.zeros((1, 2))})
    assert decode_predictions(outputs["probabilities"], top=1) == [[(1, "class_1", 0.75)]]


def test_float_pixels_of_0_to_255_are_told_to_come_as_uint8():
    """`keras.utils.image_dataset_from_directory` (and `img_to_array`) give float32 pixels in
    [0, 255]: mapped over such a dataset, the refusal said only that floats should be in [0, 1],
    where the eager one said to pass uint8."""
    images = np.full((2, 8, 8, 1), 255.0, np.float32)
    dataset = tf.data.Dataset.from_tensors(images)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"should be in \[0, 1\].*as uint8"):
        list(dataset.map(lambda x: preprocess_input(x, (8, 8, 1))))
    with pytest.raises(ValueError, match=r"should be in \[0, 1\] \(pass 0-255 pixels as uint8"):
        preprocess_input(images, (8, 8, 1))
    uint8 = dataset.map(lambda x: preprocess_input(tf.cast(x, tf.uint8), (8, 8, 1)))
    np.testing.assert_allclose(next(iter(uint8)), np.ones_like(images))


def test_a_gray_pil_image_is_told_how_to_add_its_channels_axis(tmp_path):
    """`keras.utils.load_img(path, color_mode="grayscale")` gives a PIL image of shape (H, W):
    refused with "pass images[..., None]", which a PIL image does not take (TypeError)."""
    from PIL import Image

    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "gray.png")
    image = keras.utils.load_img(tmp_path / "gray.png", color_mode="grayscale")
    with pytest.raises(ValueError, match=re.escape("pass np.asarray(images)[..., None])")):
        preprocess_input(image, (28, 28, 1))
    assert preprocess_input(np.asarray(image)[..., None], (28, 28, 1)).shape == (1, 28, 28, 1)
    with pytest.raises(ValueError, match=re.escape("pass np.asarray(images)[..., None])")):
        preprocess_input([[0, 255], [255, 0]], (28, 28, 1))  # a list takes no [..., None] either
    # An array or a tensor keeps the shorter hint.
    for gray in (np.zeros((20, 30), np.uint8), tf.zeros((20, 30), tf.uint8)):
        with pytest.raises(ValueError, match=re.escape("pass images[..., None])")):
            preprocess_input(gray, (28, 28, 1))
