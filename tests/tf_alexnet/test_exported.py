"""tf_alexnet.exported: versions, assets, metadata, and who imports the layout."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO
from tf_alexnet import contract
from tf_alexnet.errors import UserError
from tf_alexnet.exported import (
    ExportedModel,
    next_version,
    saved_model_path,
    version_folder,
    version_numbers,
)


def _version(model_dir, name, saved_model=True):
    folder = model_dir / name
    folder.mkdir(parents=True)
    if saved_model:
        (folder / "saved_model.pb").write_bytes(b"")
    return folder


def test_only_integer_named_folders_with_a_saved_model_are_versions(tmp_path):
    for name in ("1", "10", "2"):
        _version(tmp_path, name)
    _version(tmp_path, "7", saved_model=False)  # a half-written version
    _version(tmp_path, ".tmp-11-123")  # export's temporary folder
    _version(tmp_path, "²")  # str.isdigit() says yes; TF Serving and int() say no
    _version(tmp_path, "v3")
    (tmp_path / "12").write_text("a file, not a folder")
    assert version_numbers(tmp_path) == [1, 2, 10]
    assert saved_model_path(tmp_path) == tmp_path / "10"
    assert saved_model_path(tmp_path / "2") == tmp_path / "2"
    assert version_folder(tmp_path) == tmp_path / "10"
    assert version_folder(tmp_path, 2) == tmp_path / "2"
    # Numbers in use, even by an unfinished folder or a file, are never reused.
    assert next_version(tmp_path) == 13
    assert next_version(tmp_path / "missing") == 1
    assert version_numbers(tmp_path / "missing") == []


def test_missing_versions_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="No exported SavedModel at") as found:
        saved_model_path(tmp_path)
    assert "It holds models" not in str(found.value)
    _version(tmp_path, "7", saved_model=False)
    with pytest.raises(UserError, match="No exported version 7 in"):
        version_folder(tmp_path, 7)
    with pytest.raises(UserError, match="not a version folder"):
        _ = ExportedModel(tmp_path / ".tmp-1-2").version


def test_a_base_path_given_for_a_model_folder_names_its_models(tmp_path):
    _version(tmp_path / "fashion", "1")
    _version(tmp_path / "alexnet", "3")
    _version(tmp_path / "empty", "2", saved_model=False)
    with pytest.raises(UserError) as found:
        saved_model_path(tmp_path)
    assert str(found.value) == (
        f"No exported SavedModel at {str(tmp_path)!r}. It holds models (alexnet, fashion): "
        f"give one, e.g. {str(tmp_path / 'alexnet')!r}."
    )


def test_assets_and_metadata_round_trip(tmp_path):
    folder = ExportedModel(_version(tmp_path, "3"))
    assert folder.metadata() == {}
    with pytest.raises(UserError, match="no class names asset"):
        folder.class_names()
    folder.write_class_names(["cat", "dog"])
    folder.write_metadata({"input_shape": [28, 28, 1]})
    found = ExportedModel.find(tmp_path)
    assert found.version == 3
    assert found.class_names() == ("cat", "dog")
    assert found.metadata() == {"input_shape": [28, 28, 1]}
    assert found.class_names_file == tmp_path / "3" / "assets" / contract.CLASS_NAMES_ASSET
    assert found.metadata_file == tmp_path / "3" / "assets.extra" / "metadata.json"
    assert found.warmup_file == tmp_path / "3" / "assets.extra" / "tf_serving_warmup_requests"
    assert json.loads(found.metadata_file.read_text()) == {"input_shape": [28, 28, 1]}


def test_a_real_export_reads_back(model_base):
    exported = ExportedModel.find(model_base / contract.MODEL_NAME)
    assert exported.version == 1
    assert exported.class_names() == contract.CLASS_NAMES
    assert exported.metadata()["input_shape"] == [28, 28, 1]
    assert exported.warmup_file.is_file()
    signature = exported.signature(contract.SIGNATURE_IMAGE_TENSOR)
    assert contract.OUTPUT_PROBABILITIES in signature.structured_outputs
    with pytest.raises(UserError, match="has no signature 'nope'"):
        exported.signature("nope")


WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("tensorflow", "keras"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    from tf_alexnet import exported, predictions
    import tf_alexnet
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    decoded = predictions.decode_predictions([[0.2, 0.8]], top=1, class_names=["cat", "dog"])
    print(exported.version_numbers(sys.argv[1]), decoded)
    try:
        tf_alexnet.load_exported
    except ImportError as err:
        print("ImportError:", err)
    """
)


def test_the_layout_imports_without_tensorflow(tmp_path):
    _version(tmp_path, "4")
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "[4] [[(1, 'dog', 0.8)]]"
    assert lines[1].startswith("ImportError: tf_alexnet.load_exported needs TensorFlow")


def _imports(module):
    """The tf_alexnet and tf_alexnet_serving modules that `module` imports, at any depth."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        top = name.partition(".")[0]
        if name in seen or top not in ("tf_alexnet", "tf_alexnet_serving"):
            continue
        base = REPO / ("serving" if top == "tf_alexnet_serving" else "")
        path = base / (name.replace(".", "/") + ".py")
        if not path.is_file():
            path = base / name.replace(".", "/") / "__init__.py"
        if not path.is_file():
            continue  # `from package import name`: a name, not a module
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
    return seen


@pytest.mark.parametrize("module", ["tf_alexnet.predict", "tf_alexnet_serving.backends"])
def test_readers_do_not_import_the_writer(module):
    imported = _imports(module)
    assert "tf_alexnet.exported" in imported
    assert not {"tf_alexnet.export", "tf_alexnet.train", "tf_alexnet.data"} & imported


def test_load_exported_says_what_it_takes_instead_of_a_plain_keras_export(tmp_path):
    import tf_alexnet

    model = tf_alexnet.AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25)
    model.export(str(tmp_path / "keras_export"), verbose=False)
    with pytest.raises(ValueError) as found:
        tf_alexnet.load_exported(tmp_path / "keras_export")
    message = str(found.value)
    assert message.startswith("`load_exported` expects a SavedModel written by `tf-alexnet export`")
    assert 'keras.layers.TFSMLayer(path, call_endpoint="serve")' in message
    assert message.endswith(f"Received: path={str(tmp_path / 'keras_export')!r}")
    # What the message suggests works.
    import keras

    layer = keras.layers.TFSMLayer(str(tmp_path / "keras_export"), call_endpoint="serve")
    assert layer(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)


@pytest.mark.parametrize("path", [None, 3])
def test_load_exported_wants_a_path(path):
    import tf_alexnet

    with pytest.raises(ValueError, match=f"Received: path={path}$"):
        tf_alexnet.load_exported(path)


READ_IN_ASCII = """
import locale, sys
from tf_alexnet.exported import ExportedModel
folder = ExportedModel.find(sys.argv[1])
print(locale.getpreferredencoding(False), ascii(folder.class_names()), ascii(folder.metadata()),
      sep="\\n")
folder.write_class_names(["caf\\u00e9", "na\\u00efve"])
folder.write_metadata({"note": "\\u00e9t\\u00e9"})
"""


def test_class_names_are_utf8_whatever_the_locale(tmp_path):
    """In a C (ASCII) locale, a class named `café` gave "'ascii' codec can't decode byte
    0xc3" on reading the export."""
    folder = ExportedModel(_version(tmp_path, "1"))
    folder.write_class_names(["café", "naïve"])
    folder.write_metadata({"class_names": ["café"]})
    assert folder.class_names_file.read_bytes() == "café\nnaïve\n".encode()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"  # else Python 3.7+ switches a C locale to UTF-8
    child = subprocess.run(
        [sys.executable, "-c", READ_IN_ASCII, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    encoding, names, metadata = child.stdout.splitlines()
    assert encoding == "ANSI_X3.4-1968"  # ASCII: the locale the test is about
    assert (names, metadata) == ("('caf\\xe9', 'na\\xefve')", "{'class_names': ['caf\\xe9']}")
    assert folder.class_names_file.read_bytes() == "café\nnaïve\n".encode()
    assert folder.metadata() == {"note": "été"}


@pytest.mark.parametrize("name", ["line1\nline2", "a\rb", "a\x85b", "a\u2028b", "a\r\n"])
def test_class_names_that_would_read_back_as_more_names_are_refused(tmp_path, name):
    folder = ExportedModel(_version(tmp_path, "1"))
    with pytest.raises(UserError) as refused:
        folder.write_class_names(["cat", name, ""])
    assert str(refused.value) == (
        "Each class name should be one line of the export's class names, without line breaks. "
        f"Received: a class named {name!r}"
    )
    assert not folder.class_names_file.exists()
    folder.write_class_names(["cat", ""])  # an empty name is a line of its own
    assert folder.class_names() == ("cat", "")


@pytest.fixture(scope="module")
def mini_export(tmp_path_factory):
    """A small untrained `mini` model at 28x28x1, exported (a few seconds)."""
    import tensorflow as tf

    import tf_alexnet
    from tf_alexnet.export import export

    folder = tmp_path_factory.mktemp("mini_export")
    tf_alexnet.AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.125).save(
        folder / "mini.keras"
    )
    png = tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)).numpy()
    return export(folder / "mini.keras", folder / "models", sample_images=[png]).path


def test_the_exported_layer_takes_float_pixel_batches(mini_export):
    import keras

    import tf_alexnet

    layer = tf_alexnet.load_exported(mini_export)
    pixels = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
    probabilities = layer(pixels)["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert layer(keras.Input((28, 28, 1)))["probabilities"].shape == (None, 10)
    # The layer's config names the export; it is rebuilt from it (when deserialization of
    # external SavedModels is allowed, as Keras requires for any TFSMLayer).
    again = type(layer).from_config(layer.get_config(), safe_mode=False)
    np.testing.assert_allclose(again(pixels)["probabilities"].numpy(), probabilities, atol=1e-6)


@pytest.mark.parametrize(
    ("images", "received", "hint"),
    [
        (np.zeros((2, 28, 28, 1), np.uint8), "dtype uint8 and shape (2, 28, 28, 1)", "/ 255"),
        (np.zeros((2, 32, 32, 1), np.float32), "dtype float32 and shape (2, 32, 32, 1)", ""),
        (np.zeros((2, 28, 28, 3), np.float32), "dtype float32 and shape (2, 28, 28, 3)", ""),
        (np.zeros((28, 28, 1), np.float32), "dtype float32 and shape (28, 28, 1)", "images[None]"),
        ("keras.Input((32, 32, 1))", "dtype float32 and shape (batch, 32, 32, 1)", ""),
    ],
    ids=["uint8", "size", "channels", "no batch axis", "keras.Input"],
)
def test_the_exported_layer_names_the_images_it_expects(mini_export, images, received, hint):
    """Wrong images ended in a long TypeError, "Binding inputs to tf.function failed due to
    `Can not cast TensorSpec(...)`", followed by the tensor's values."""
    import keras

    import tf_alexnet

    layer = tf_alexnet.load_exported(mini_export)
    if isinstance(images, str):
        images = keras.Input((32, 32, 1))
    with pytest.raises(ValueError) as found:
        layer(images)
    message = str(found.value)
    assert (
        f"The exported model {str(mini_export)!r} expects a batch of images of dtype float32 and "
        "shape (batch, 28, 28, 1): pixels in [0, 1]"
    ) in message
    assert f"Received: images of {received}" in message and hint in message
    assert "Can not cast" not in message and "Could not automatically infer" not in message
