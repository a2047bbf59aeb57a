"""Test-time flips: an image's class scores averaged with its mirror image's, at inference only.

The layers (`MirrorTwins`, `TwinMean`), the builder's `test_time_flip`, the setting that trains
such a model, and what an export of one serves.
"""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_alexnet import AlexNet
from tf_alexnet import config as config_lib
from tf_alexnet.layers import MirrorTwins, TwinMean
from tf_alexnet.model import check_classifier, output_layer
from tf_alexnet.saving import load_model

SHAPE = (28, 28, 1)


def _images(count=5, seed=0):
    return np.random.default_rng(seed).random((count, *SHAPE), dtype=np.float32)


def _twins(**kwargs):
    """A model with test-time flips and the plain one, with the same (trained-looking) weights."""
    flips = AlexNet(input_shape=SHAPE, variant="mini", width=0.25, test_time_flip=True, **kwargs)
    plain = AlexNet(input_shape=SHAPE, variant="mini", width=0.25, **kwargs)
    rng = np.random.default_rng(1)
    weights = [w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in flips.get_weights()]
    variances = ["variance" in v.path for v in flips.weights]
    weights = [np.abs(w) if var else w for w, var in zip(weights, variances, strict=True)]
    flips.set_weights(weights)
    plain.set_weights(weights)  # the flip layers hold no weights: the same list fits both
    return flips, plain


def test_the_layers_double_and_average_the_batch_at_inference_only():
    images = _images(3)
    twins = MirrorTwins()(images)
    assert twins.shape == (6, *SHAPE)
    np.testing.assert_array_equal(twins[:3], images)
    np.testing.assert_array_equal(twins[3:], images[:, :, ::-1])  # left to right
    np.testing.assert_array_equal(MirrorTwins()(images, training=True), images)

    scores = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_allclose(TwinMean()(scores), (scores[:3] + scores[3:]) / 2)
    np.testing.assert_array_equal(TwinMean()(scores, training=True), scores)
    assert MirrorTwins().compute_output_shape((4, *SHAPE)) == (8, *SHAPE)
    assert MirrorTwins().compute_output_shape((None, *SHAPE)) == (None, *SHAPE)
    assert TwinMean().compute_output_shape((8, 10)) == (4, 10)


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_scores_are_the_mean_of_the_image_and_its_mirror_image(activation):
    flips, plain = _twins(classifier_activation=activation)
    images = _images()
    scores = flips.predict_on_batch(images)
    expected = (plain.predict_on_batch(images) + plain.predict_on_batch(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.abs(plain.predict_on_batch(images[:, :, ::-1]) - plain(images)).max() > 1e-3
    np.testing.assert_allclose(flips.predict_on_batch(images[:, :, ::-1]), scores, atol=1e-5)
    assert scores.shape == (5, 10)
    # what reads the model's output sees the predictions layer's kind: logits or probabilities
    assert output_layer(flips).name == "predictions"
    assert check_classifier(flips, "flips.keras") is (activation == "softmax")
    if activation == "softmax":
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_training_sees_each_image_once():
    flips, plain = _twins(dropout=0.0)
    images = _images(8)
    np.testing.assert_allclose(
        flips(images, training=True), plain(images, training=True), atol=1e-5
    )


def test_a_saved_model_with_flips_loads_and_answers_alike(tmp_path):
    flips, _ = _twins()
    path = tmp_path / "flips.keras"
    flips.save(path)
    loaded = load_model(path)
    assert loaded.layers[1].name == "mirror_twins"
    assert loaded.layers[-1].name == "twin_mean"
    np.testing.assert_allclose(
        loaded.predict_on_batch(_images()), flips.predict_on_batch(_images()), atol=1e-6
    )


def test_a_fixed_batch_size_and_mixed_precision_keep_their_shapes_and_dtypes():
    inputs = keras.Input(SHAPE, batch_size=4)
    model = AlexNet(input_tensor=inputs, variant="mini", width=0.25, test_time_flip=True)
    assert model.output_shape == (4, 10)
    assert model.predict_on_batch(_images(4)).shape == (4, 10)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = AlexNet(input_shape=SHAPE, variant="mini", width=0.25, test_time_flip=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.layers[-1].compute_dtype == "float32"
    assert mixed(_images()).dtype == "float32"


def test_flips_need_a_top_and_a_boolean():
    with pytest.raises(ValueError, match=r"`test_time_flip=True` averages class scores"):
        AlexNet(input_shape=SHAPE, variant="mini", include_top=False, test_time_flip=True)
    with pytest.raises(ValueError, match=r"Received: test_time_flip='yes'"):
        AlexNet(input_shape=SHAPE, variant="mini", test_time_flip="yes")
    with pytest.raises(ValueError, match=r"Received: test_time_flip=1"):
        AlexNet(input_shape=SHAPE, variant="mini", test_time_flip=1)


def test_a_numpy_boolean_turns_flips_on_as_it_does_include_top():
    """`include_top` took `np.True_` (a setting read from an array, a parametrized grid) and
    `test_time_flip` refused it ("should be True or False. Received: test_time_flip=np.True_")."""
    model = AlexNet(
        input_shape=SHAPE, variant="mini", width=0.25, include_top=np.True_, test_time_flip=np.True_
    )
    assert [model.layers[1].name, model.layers[-1].name] == ["mirror_twins", "twin_mean"]
    plain = AlexNet(input_shape=SHAPE, variant="mini", width=0.25, test_time_flip=np.False_)
    assert "mirror_twins" not in [layer.name for layer in plain.layers]


def test_the_cpu_preset_flips_and_the_flag_turns_it_off():
    assert config_lib.resolve("cpu").test_time_flip is True
    assert config_lib.resolve("chapter").test_time_flip is False  # the chapter's own network
    off = config_lib.resolve("cpu", overrides={"test_time_flip": False})
    assert off.test_time_flip is False
    with pytest.raises(Exception, match="test_time_flip"):
        config_lib.from_dict({"test_time_flip": "sometimes"})


def test_training_refuses_flips_at_test_time_without_flips_in_training(tmp_path, capsys):
    """`--preset cpu --no-flip` (the preset `auto` picks on a CPU), for data whose mirror images
    are other classes (left and right arrows), trained a model that answers the same for an
    image and its mirror image: such classes scored at chance (0.5 test accuracy on arrows,
    0.99 with --no-test-time-flip). Training refuses the pair in one line."""
    from tf_alexnet.cli import main
    from tf_alexnet.errors import UserError

    no_flip = {"augment": {"flip": False}}
    with pytest.raises(UserError, match=r"Received: test_time_flip=True, augment\.flip=False"):
        config_lib.resolve("cpu", overrides=no_flip)
    assert (
        config_lib.resolve("cpu", overrides={**no_flip, "test_time_flip": False}).augment.flip
        is False
    )
    run = tmp_path / "arrows"
    assert main(["train", "--preset", "cpu", "--no-flip", "--run-dir", str(run)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "pass --no-test-time-flip with --no-flip" in error
    assert not run.exists()
    # a run trained so before still reads its settings: it can be evaluated and exported
    recorded = {**config_lib.PRESETS["cpu"], "augment": {"flip": False}, "test_time_flip": True}
    assert config_lib.from_recorded(recorded).with_absolute_paths().test_time_flip is True


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_export_serves_the_same_scores_for_an_image_and_its_mirror(tmp_path):
    from tf_alexnet import contract
    from tf_alexnet.export import export
    from tf_alexnet.exported import ExportedModel

    flips, plain = _twins(classifier_activation=None)
    path = tmp_path / "flips.keras"
    flips.save(path)
    pixels = (np.random.default_rng(3).random((28, 28)) * 255).astype(np.uint8)
    images = [_png(pixels), _png(pixels[:, ::-1].copy())]
    result = export(path, tmp_path / "models", sample_images=images)
    assert ExportedModel(result.path).metadata()["test_time_flip"] is True
    plain_path = tmp_path / "plain.keras"
    plain.save(plain_path)
    plain_export = export(plain_path, tmp_path / "models", sample_images=images)
    assert ExportedModel(plain_export.path).metadata()["test_time_flip"] is False
    signature = tf.saved_model.load(str(result.path)).signatures[contract.SIGNATURE_IMAGE_BYTES]
    served = signature(**{contract.INPUT_IMAGE_BYTES: tf.constant(images)})
    probabilities = served[contract.OUTPUT_PROBABILITIES].numpy()
    np.testing.assert_allclose(probabilities[0], probabilities[1], atol=1e-6)
    scaled = pixels[None, :, :, None].astype(np.float32) / 255
    mean_logits = (plain.predict_on_batch(scaled) + plain.predict_on_batch(scaled[:, :, ::-1])) / 2
    np.testing.assert_allclose(probabilities[0], tf.nn.softmax(mean_logits)[0], atol=1e-5)


def _cut_models():
    """A flipping model cut in two ways: a new head on fc7 (its MirrorTwins kept, its TwinMean
    left out), and the network from conv1 on (its TwinMean kept, its MirrorTwins left out)."""
    flips, _ = _twins()
    head = keras.layers.Dense(4, name="new_head")(flips.get_layer("fc7").output)
    new_head = keras.Model(flips.input, head)
    inputs = keras.Input(SHAPE)
    x = inputs
    for layer in flips.layers[2:]:  # after image and mirror_twins
        x = layer(x)
    no_twins = keras.Model(inputs, x)
    return new_head, no_twins


@pytest.mark.parametrize(
    ("which", "message"),
    [
        (0, r"'mirror_twins' layer \(MirrorTwins\) doubles the batch .* 1 MirrorTwins and 0 "),
        (1, r"'twin_mean' layer \(TwinMean\) halves the batch .* 0 MirrorTwins and 1 "),
    ],
    ids=["new_head_on_fc7", "from_conv1_on"],
)
def test_predict_and_export_refuse_a_model_whose_flips_were_cut_in_half(tmp_path, which, message):
    """A flipping model cut at an inner layer (a new head on fc7, say) answers 2N rows for N
    images: predict failed with "zip() argument 2 is longer than argument 1", evaluate and
    export took it. They refuse it in one line that says why."""
    from tf_alexnet.errors import UserError
    from tf_alexnet.export import export
    from tf_alexnet.predict import predict_files

    model = _cut_models()[which]
    assert len(model.predict_on_batch(_images(4))) != 4  # what the tools would have read
    path = tmp_path / "cut.keras"
    model.save(path)
    image = tmp_path / "shirt.png"
    image.write_bytes(_png((np.random.default_rng(3).random((28, 28)) * 255).astype(np.uint8)))
    with pytest.raises(UserError, match=r"should answer one row of class scores per image"):
        predict_files([str(image), str(image)], path)
    with pytest.raises(UserError, match=message):
        export(path, tmp_path / "models", sample_images=[image.read_bytes()])
    assert not (tmp_path / "models").exists()
    if which == 0:  # the new head, its flips paired again: a classifier
        paired = keras.Model(model.input, TwinMean()(model.output))
        assert paired.predict_on_batch(_images(4)).shape == (4, 4)
        assert check_classifier(paired, "paired.keras") is False


def test_a_model_trained_without_flips_gets_them_from_its_file(tmp_path):
    """As the README says: the flip layers hold no weights, so `weights=` gives a plain
    model's file its flips (and a flipping model's file drops them) without training."""
    flips, plain = _twins()
    plain_path, flips_path = tmp_path / "plain.keras", tmp_path / "flips.keras"
    plain.save(plain_path)
    flips.save(flips_path)
    images = _images()
    seeded = AlexNet(
        input_shape=SHAPE, variant="mini", width=0.25, test_time_flip=True, weights=plain_path
    )
    np.testing.assert_allclose(
        seeded.predict_on_batch(images), flips.predict_on_batch(images), atol=1e-6
    )
    dropped = AlexNet(input_shape=SHAPE, variant="mini", width=0.25, weights=flips_path)
    np.testing.assert_allclose(
        dropped.predict_on_batch(images), plain.predict_on_batch(images), atol=1e-6
    )
