"""Loading models and weights from what a user has on disk: a training run's folder, an
exported SavedModel folder, any other folder."""

import re

import keras
import numpy as np
import pytest

import tf_alexnet
from tf_alexnet import AlexNet


@pytest.fixture
def folders(tmp_path):
    """A run directory (config.json and final.keras, no best.keras), a SavedModel folder of
    numbered versions as `tf-alexnet export` writes it, and an empty folder."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    AlexNet(input_shape=(28, 28, 1), variant="mini").save(run / "final.keras")
    exported = tmp_path / "models" / "alexnet"
    (exported / "3").mkdir(parents=True)
    (exported / "3" / "saved_model.pb").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    return run, exported, empty


def test_weights_from_a_folder_say_which_file_to_pass(folders):
    """`AlexNet(weights="runs/quick")` (the CLI takes run directories) said only "should be
    None or the path of an existing `.keras` or `.weights.h5` file"; it now names the run's
    model file, or the loader of an exported SavedModel."""
    run, exported, empty = folders
    final = str(run / "final.keras")
    with pytest.raises(
        ValueError,
        match=re.escape(f"a training run, whose model is {final!r}. Received: weights="),
    ):
        AlexNet(include_top=False, input_shape=(28, 28, 1), variant="mini", weights=run)
    with pytest.raises(ValueError, match=r"an exported SavedModel, which loads with `tf_alexnet"):
        AlexNet(input_shape=(28, 28, 1), variant="mini", weights=str(exported))
    with pytest.raises(ValueError, match=r"is a folder\. Received: weights="):
        AlexNet(input_shape=(28, 28, 1), variant="mini", weights=str(empty))
    # The file it names seeds the model.
    seeded = AlexNet(include_top=False, input_shape=(28, 28, 1), variant="mini", weights=final)
    assert seeded.output_shape == (None, 4, 4, 64)


def test_load_model_of_a_folder_says_what_it_is(folders):
    """`tf_alexnet.load_model(RUN_DIR)` answered "No model file at 'RUN_DIR'", for a folder
    that holds one."""
    run, exported, _ = folders
    with pytest.raises(ValueError, match=r"is a folder: a training run, whose model is .*final"):
        tf_alexnet.load_model(run)
    with pytest.raises(ValueError, match=r"is a folder: an exported SavedModel"):
        tf_alexnet.load_model(exported / "3")
    model = tf_alexnet.load_model(run / "final.keras")
    assert isinstance(model, keras.Model)


def test_weights_from_a_file_with_objects_of_your_own_say_how_to_load_them(tmp_path):
    """A transfer model with an unregistered layer or a Lambda in its head: Keras's refusal,
    passed on, said to pass `custom_objects` or `safe_mode=False` "to the loading function",
    arguments `AlexNet` does not take (the unregistered layer's, many lines with the config)."""

    class Doubled(keras.layers.Layer):  # the user's own layer, not registered
        def call(self, inputs):
            return inputs * 2.0

    features = AlexNet(
        include_top=False, pooling="avg", input_shape=(28, 28, 1), variant="mini", width=0.25
    )
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, Doubled()(features(inputs))).save(tmp_path / "custom.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(features(inputs))).save(
        tmp_path / "lambda.keras"
    )

    def build(name):
        return AlexNet(
            include_top=False,
            input_shape=(28, 28, 1),
            variant="mini",
            width=0.25,
            weights=tmp_path / name,
        )

    with pytest.raises(ValueError) as err:
        build("custom.keras")
    message = str(err.value)
    assert "it holds 'Doubled', an object of your own" in message and "\n" not in message
    assert "custom_object_scope({'Doubled': Doubled})" in message
    with keras.saving.custom_object_scope({"Doubled": Doubled}):  # what the message says works
        seeded = build("custom.keras")
    for layer in ("conv1", "conv5"):
        copied, expected = (m.get_layer(layer).get_weights() for m in (seeded, features))
        for got, want in zip(copied, expected, strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match=r"keras\.config\.enable_unsafe_deserialization\(\)"):
        build("lambda.keras")


def test_load_exported_of_a_keras_model_says_what_loads_it(folders):
    """`tf_alexnet.load_exported("runs/quick/best.keras")` (or the run's folder) answered only
    "No exported SavedModel at ...", where `load_model` of an export names `load_exported`."""
    run, _, empty = folders
    final = str(run / "final.keras")
    with pytest.raises(ValueError, match=r"a Keras model file: load it with `tf_alexnet\.load_"):
        tf_alexnet.load_exported(final)
    with pytest.raises(
        ValueError,
        match=re.escape(f"a training run: load its model with `tf_alexnet.load_model({final!r})`"),
    ):
        tf_alexnet.load_exported(run)
    with pytest.raises(ValueError, match=r"No exported SavedModel at .*empty'\.$"):
        tf_alexnet.load_exported(empty)
