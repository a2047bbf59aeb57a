"""Everything the package writes, it reads back: each preset's recipe, saved, loaded afresh.

Each preset trains briefly (a tiny image folder, the variant's smallest input, one epoch),
then a fresh process that imports only `tf_alexnet` loads `best.keras` (with
`tf_alexnet.load_model`) and `final.keras` (with `keras.models.load_model`), compiled: the
optimizer and its learning-rate schedule are deserialized too.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_alexnet import config as config_lib
from tf_alexnet.train import train
from tf_alexnet.variants import min_input_size

RECIPES = {
    **{preset: {} for preset in config_lib.PRESETS},
    # Warm-up before a schedule that has none of its own: the `WarmUp` schedule is saved.
    "quick+warmup+constant": {"schedule": "constant", "warmup_epochs": 1},
    "quick+warmup+step": {"schedule": "step", "epochs": 2, "step_epochs": 1, "warmup_epochs": 1},
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of 8 small gray PNGs each (dark and bright): 3 steps of 4, 4 to validate."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "bright")):
        (root / name).mkdir()
        for i in range(8):
            pixels = rng.integers(0, 128, (16, 16, 1), dtype=np.uint8) + 127 * label
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


@pytest.fixture(scope="module")
def trained_recipes(image_folder, tmp_path_factory):
    runs = {}
    for recipe, changes in RECIPES.items():
        preset = recipe.split("+")[0]
        variant = config_lib.PRESETS[preset].get("variant", config_lib.TrainConfig().variant)
        config = config_lib.resolve(
            preset,
            overrides={
                "image_folder": str(image_folder),
                "image_size": max(min_input_size(variant), 16),
                "validation_fraction": 0.25,
                "test_fraction": 0.0,
                "batch_size": 4,
                "epochs": 1,
                "shuffle_buffer": 64,
                **changes,
            },
        )
        runs[recipe] = tmp_path_factory.mktemp("recipes") / recipe
        train(config, runs[recipe])
    return runs


MODEL_FILES = ("best.keras", "final.keras")
FRESH_LOAD = textwrap.dedent(
    """
    import json, sys

    import tf_alexnet

    assert "tf_alexnet.train" not in sys.modules and "tf_alexnet.optim" not in sys.modules
    import keras

    answers = {}
    for path in json.loads(sys.argv[1]):
        # Each writer (the checkpoint callback, the final save) meets the other loader too.
        load = tf_alexnet.load_model if path.endswith("best.keras") else keras.models.load_model
        model = load(path)  # compile=True, the default: the optimizer is rebuilt too
        schedule = type(model.optimizer._learning_rate).__name__
        answers[path] = [schedule, model.output_shape[-1]]
    print(json.dumps(answers))
    """
)


@pytest.mark.slow
def test_every_recipe_loads_in_a_fresh_process_after_import_tf_alexnet(trained_recipes):
    paths = [str(run / name) for run in trained_recipes.values() for name in MODEL_FILES]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(answers) == sorted(paths)
    assert all(classes == 2 for _, classes in answers.values())
    schedules = {path: schedule for path, (schedule, _) in answers.items()}
    for recipe in ("quick+warmup+constant", "quick+warmup+step"):
        assert schedules[str(trained_recipes[recipe] / "final.keras")] == "WarmUp"
        assert schedules[str(trained_recipes[recipe] / "best.keras")] == "WarmUp"
    assert schedules[str(trained_recipes["cpu"] / "final.keras")] == "CosineDecay"


@pytest.mark.parametrize("path", [None, 3])
def test_load_model_wants_a_path(path):
    import tf_alexnet

    with pytest.raises(
        ValueError, match=r"the path of a `\.keras` file\. Received: path=" + str(path)
    ):
        tf_alexnet.load_model(path)


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("compile", "no", r"`compile` should be True or False\. Received: compile='no'"),
        ("safe_mode", 0, r"`safe_mode` should be True or False\. Received: safe_mode=0"),
        (
            "custom_objects",
            ["MyLayer"],
            r"`custom_objects` should be None or a dict .*Received: custom_objects=\['MyLayer'\]",
        ),
    ],
)
def test_load_model_refuses_arguments_of_the_wrong_kind(tmp_path, argument, value, message):
    """`compile="no"` loaded the model compiled (a non-empty string is true), and a list of
    custom objects ended in "'list' object is not a mapping", naming no argument."""
    import tf_alexnet

    path = tmp_path / "mini.keras"
    model = tf_alexnet.AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25)
    model.compile(optimizer="sgd", loss="mse")
    model.save(path)
    with pytest.raises(ValueError, match=message):
        tf_alexnet.load_model(path, **{argument: value})
    assert not tf_alexnet.load_model(path, compile=np.False_, custom_objects={}).compiled
    assert tf_alexnet.load_model(path).compiled


@pytest.mark.parametrize("content", [b"", b"not a model\n", b"PK\x03\x04 cut short"])
def test_load_model_says_a_file_is_not_a_keras_archive(tmp_path, content):
    """Keras answers "File not found" for a file that is there; this says what it is."""
    import tf_alexnet

    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(
        ValueError, match=r"is not a `\.keras` file \(a zip archive\) saved by Keras"
    ):
        tf_alexnet.load_model(path)


def test_load_model_says_a_zip_without_a_model_is_not_a_keras_archive(tmp_path):
    """A zip holding only hello.txt ended in a raw `KeyError: "There is no item named
    'config.json' in the archive"` traceback."""
    import zipfile

    import tf_alexnet

    path = tmp_path / "x.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hello\n")
    with pytest.raises(
        ValueError, match=r"is not a `\.keras` file \(a zip archive\) saved by Keras"
    ):
        tf_alexnet.load_model(path)


def test_load_model_takes_keras_safe_mode_and_custom_objects(tmp_path):
    """A transfer model with a Lambda head: Keras's refusal says to pass `safe_mode=False` "to
    the loading function", and `tf_alexnet.load_model` answered that with a TypeError (as it
    did `custom_objects=` for an unregistered layer of the user's)."""
    import keras

    import tf_alexnet

    class Doubled(keras.layers.Layer):  # the user's own layer, not registered
        def call(self, inputs):
            return inputs * 2.0

    features = tf_alexnet.AlexNet(
        input_shape=(28, 28, 1), variant="mini", include_top=False, pooling="avg", width=0.25
    )
    inputs = keras.Input((28, 28, 1))
    lambda_head = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(features(inputs)))
    lambda_head.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        tf_alexnet.load_model(tmp_path / "lambda.keras")
    x = np.random.default_rng(0).random((2, 28, 28, 1), "float32")
    loaded = tf_alexnet.load_model(tmp_path / "lambda.keras", safe_mode=False)
    np.testing.assert_allclose(loaded(x), lambda_head(x), rtol=1e-5, atol=1e-6)

    custom = keras.Model(inputs, Doubled(name="doubled")(features(inputs)))
    custom.save(tmp_path / "custom.keras")
    loaded = tf_alexnet.load_model(tmp_path / "custom.keras", custom_objects={"Doubled": Doubled})
    np.testing.assert_allclose(loaded(x), custom(x), rtol=1e-5, atol=1e-6)


def test_load_model_says_an_optimizer_of_another_backend_needs_compile_false(tmp_path):
    """Keras saves an optimizer as its backend's class (keras.src.backend.torch.optimizers...
    under PyTorch); loaded compiled where that module cannot be imported, a raw TypeError came
    through `tf_alexnet.load_model`. (A made-up backend module stands in for PyTorch's.)"""
    import json
    import zipfile

    import keras

    import tf_alexnet

    model = tf_alexnet.AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25)
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((2, 28, 28, 1)), np.zeros((2, 10)), verbose=0)
    model.save(tmp_path / "trained.keras")
    path = tmp_path / "other_backend.keras"
    with (
        zipfile.ZipFile(tmp_path / "trained.keras") as source,
        zipfile.ZipFile(path, "w") as target,
    ):
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                optimizer = config["compile_config"]["optimizer"]
                optimizer["module"] = "keras.src.backend.nosuch.optimizers.nosuch_adam"
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(ValueError, match=r"another Keras backend .* with compile=False"):
        tf_alexnet.load_model(path)
    loaded = tf_alexnet.load_model(path, compile=False)
    assert isinstance(loaded, keras.Model) and loaded.output_shape == (None, 10)


@pytest.mark.slow
def test_load_model_refuses_an_optimizer_of_another_installed_backend(tmp_path):
    """With PyTorch installed too, a compiled model trained under KERAS_BACKEND=torch loaded
    on TensorFlow with PyTorch's optimizer class, and `fit` then failed with "expected Tensor
    as element 0 in argument 0, but got ResourceVariable"."""
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install torch")
    import os

    import keras

    import tf_alexnet

    path = tmp_path / "torch.keras"
    code = (
        "import numpy as np, tf_alexnet\n"
        "model = tf_alexnet.AlexNet(input_shape=(28, 28, 1), variant='mini', width=0.25)\n"
        "model.compile(optimizer='adam', loss='mse')\n"
        "model.fit(np.zeros((2, 28, 28, 1)), np.zeros((2, 10)), verbose=0)\n"
        f"model.save({str(path)!r})\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    saved = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert saved.returncode == 0, saved.stderr[-2000:]
    with pytest.raises(
        ValueError, match=r"another Keras backend .* Received: an optimizer of the torch"
    ):
        tf_alexnet.load_model(path)
    model = tf_alexnet.load_model(path, compile=False)
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((2, 28, 28, 1)), np.zeros((2, 10)), verbose=0)
    assert isinstance(model, keras.Model)


def test_a_saved_model_reaches_the_disk_before_its_rename_and_the_rename_after(
    tmp_path, disk_syncs
):
    """`best.keras` was renamed into place unsynced: after a power loss it could be empty or
    cut short (a rename can reach the disk before the data), and export reads it."""
    from tests.conftest import inode, synced_around
    from tf_alexnet import AlexNet
    from tf_alexnet.saving import save_model_atomic

    model = AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25)
    path = tmp_path / "best.keras"
    for _ in range(2):  # a new file, then one over it
        disk_syncs.clear()
        save_model_atomic(model, path)
        before, after = synced_around(disk_syncs, path)
        assert inode(path) in before and inode(tmp_path) in after
