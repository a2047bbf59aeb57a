"""SavedModel export: signatures, TF Serving's loader (saved_model_cli), atomic publish, warmup."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import inode, run_cli, synced_around
from tf_alexnet import contract, load_exported, load_model
from tf_alexnet.errors import UserError
from tf_alexnet.export import WARMUP_FILE, export, next_version
from tf_alexnet.sources import load_source
from tf_alexnet.specs import DataSpec

SAVED_MODEL_CLI = shutil.which("saved_model_cli") or str(
    __import__("pathlib").Path(sys.executable).parent / "saved_model_cli"
)


@pytest.fixture(scope="module")
def exported(trained_run, test_images, tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    result = export(trained_run, base, sample_images=test_images[:8])
    return result


def test_layout_assets_and_metadata(exported, trained_run):
    assert exported.version == 1 and exported.path.name == "1"
    assert exported.max_abs_difference <= 1e-5
    for name in (
        "saved_model.pb",
        "variables/variables.index",
        f"assets/{contract.CLASS_NAMES_ASSET}",
    ):
        assert (exported.path / name).is_file(), name
    assert (exported.path / "assets" / contract.CLASS_NAMES_ASSET).read_text().splitlines() == list(
        contract.CLASS_NAMES
    )
    metadata = json.loads((exported.path / "assets.extra" / "metadata.json").read_text())
    assert metadata["model_name"] == "alexnet" and metadata["version"] == 1
    assert metadata["input_shape"] == [28, 28, 1]
    assert metadata["training_metrics"]["best_val_accuracy"] > 0.5
    assert [p.name for p in exported.path.parent.iterdir()] == ["1"]  # no temp folder left


def test_variables_are_stored_once(exported, trained_run):
    with zipfile.ZipFile(trained_run / "best.keras") as archive:
        keras_weights = archive.getinfo("model.weights.h5").file_size
    saved = sum(p.stat().st_size for p in (exported.path / "variables").iterdir())
    assert saved <= 1.05 * keras_weights


def test_saved_model_cli_shows_the_signatures(exported):
    result = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", str(exported.path), "--all"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout
    assert "signature_def['serving_default']" in text and "signature_def['serving_pixels']" in text
    assert (
        "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in text
    )
    assert (
        "inputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 28, 28, 1)"
        in text
    )
    for key, dtype in [
        ("probabilities", "DT_FLOAT"),
        ("class_id", "DT_INT64"),
        ("class_name", "DT_STRING"),
        ("top_k_ids", "DT_INT32"),
        ("top_k_scores", "DT_FLOAT"),
    ]:
        assert f"outputs['{key}'] tensor_info:\n        dtype: {dtype}" in text


def test_saved_model_cli_run_agrees_with_keras(exported, trained_run, test_images, tmp_path):
    images = np.array(test_images, dtype=object)
    np.save(tmp_path / "images.npy", images, allow_pickle=True)
    result = subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            str(exported.path),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image_bytes={tmp_path / 'images.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served_ids = np.load(tmp_path / "out" / "class_id.npy")
    served_probabilities = np.load(tmp_path / "out" / "probabilities.npy")
    model = load_model(trained_run / "best.keras")
    pixels = tf.stack([tf.cast(tf.io.decode_png(b), tf.float32) / 255 for b in test_images])
    expected = tf.nn.softmax(model(pixels)).numpy()
    np.testing.assert_array_equal(served_ids, expected.argmax(axis=1))
    np.testing.assert_allclose(served_probabilities, expected, atol=1e-5)
    # A trained model: most of these real test images are classified right.
    labels = [int(label) for _, label in load_source(DataSpec()).test.take(len(test_images))]
    assert (served_ids == np.array(labels)).mean() > 0.5


def test_bytes_signature_takes_any_format_size_and_channels(exported):
    loaded = tf.saved_model.load(str(exported.path))
    serve = loaded.signatures[contract.SIGNATURE_IMAGE_BYTES]
    rng = np.random.default_rng(0)
    rgba = tf.io.encode_png(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8))
    jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8))
    outputs = serve(image_bytes=tf.stack([rgba, jpeg]))
    assert outputs["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1, atol=1e-5)
    assert outputs["top_k_ids"].shape == (2, 5) and outputs["class_name"].dtype == tf.string
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([b"not an image"]))


def test_warmup_requests_are_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(exported.path / "assets.extra" / WARMUP_FILE)))
    assert 1 <= len(records) <= 1000
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "alexnet"
        assert request.model_spec.signature_name == "serving_default"
        images = tf.make_ndarray(request.inputs["image_bytes"])
        assert tf.io.decode_png(images[0]).shape == (28, 28, 1)


def test_next_version_and_no_overwrite(exported, trained_run, test_images):
    base = exported.path.parent.parent
    assert next_version(exported.path.parent) == 2
    second = export(trained_run, base, sample_images=test_images[:2])
    assert second.version == 2
    with pytest.raises(UserError, match="never overwritten"):
        export(trained_run, base, version=1, sample_images=test_images[:2])


def test_export_checks_in_float32_in_a_process_that_serves_in_bf16(test_images, tmp_path):
    """The local backend turns on grappler's bf16 rewrite for the whole process; an export
    there (a notebook that serves and exports) used to fail its own float32 check
    ("max |difference| 9.77e-04 > 1e-05") on bf16 hardware. The rewrite is on again after."""
    from tf_alexnet import AlexNet
    from tf_alexnet.hardware import enable_bf16_rewrite

    option = "auto_mixed_precision_onednn_bfloat16"
    source = tmp_path / "three.keras"
    AlexNet(variant="mini", input_shape=(28, 28, 1), classes=3).save(source)
    try:
        enable_bf16_rewrite("on")
        result = export(
            source, tmp_path, sample_images=test_images[:4], class_names=["a", "b", "c"]
        )
        assert result.max_abs_difference < 1e-5
        assert tf.config.optimizer.get_experimental_options()[option]
    finally:
        tf.config.optimizer.set_experimental_options({option: False})


def test_an_export_runs_the_model_on_its_samples_once(
    trained_run, test_images, tmp_path, monkeypatch
):
    """It ran it three times (to check the outputs are finite, to validate the SavedModel
    against them, and to scale the tolerances by them): three d2l forward passes. It decodes
    the images once too (validating decoded them again)."""
    import tf_alexnet.export as export_lib

    calls, decoded = [], []
    run_model, decode = export_lib.sample_outputs, export_lib.encoded_batch

    def counted(model, pixels):
        calls.append(len(pixels))
        return run_model(model, pixels)

    def counted_decode(images, shape):
        decoded.append(len(images))
        return decode(images, shape)

    monkeypatch.setattr(export_lib, "sample_outputs", counted)
    monkeypatch.setattr(export_lib, "encoded_batch", counted_decode)
    export(trained_run, tmp_path, sample_images=test_images[:3])
    assert calls == [3]
    assert decoded == [3]


def test_failed_export_leaves_nothing(trained_run, test_images, tmp_path):
    existing = tmp_path / "alexnet" / "3"
    existing.mkdir(parents=True)
    (existing / "keep").write_text("served")

    def crash(folder):
        assert (folder / "saved_model.pb").is_file()  # midway: everything written, not renamed
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export(trained_run, tmp_path, sample_images=test_images[:2], before_publish=crash)
    assert sorted(p.name for p in (tmp_path / "alexnet").iterdir()) == ["3"]
    assert (existing / "keep").read_text() == "served"


def test_an_export_that_loses_the_race_for_its_number_takes_the_next(
    trained_run, test_images, tmp_path
):
    def another_export_publishes(number):
        def publish(folder):
            taken = tmp_path / "alexnet" / str(number)
            taken.mkdir()
            (taken / "saved_model.pb").write_text("another export")

        return publish

    result = export(
        trained_run,
        tmp_path,
        sample_images=test_images[:2],
        before_publish=another_export_publishes(1),
    )
    assert result.version == 2 and result.path == tmp_path / "alexnet" / "2"
    metadata = json.loads((result.path / "assets.extra" / "metadata.json").read_text())
    assert metadata["version"] == 2
    assert (tmp_path / "alexnet" / "1" / "saved_model.pb").read_text() == "another export"
    with pytest.raises(UserError, match=r"appeared while exporting: .* Nothing was published"):
        export(  # a version asked for by number is never renumbered
            trained_run,
            tmp_path,
            version=5,
            sample_images=test_images[:2],
            before_publish=another_export_publishes(5),
        )
    assert (tmp_path / "alexnet" / "5" / "saved_model.pb").read_text() == "another export"
    assert sorted(p.name for p in (tmp_path / "alexnet").iterdir()) == ["1", "2", "5"]


def test_load_exported_inside_a_keras_model(exported, test_images):
    import keras

    layer = load_exported(exported.path.parent)  # model folder: its highest version
    inputs = keras.Input((28, 28, 1))
    probabilities = layer(inputs)["probabilities"]
    model = keras.Model(inputs, keras.layers.Lambda(lambda p: p * 2)(probabilities))
    pixels = tf.stack([tf.cast(tf.io.decode_png(b), tf.float32) / 255 for b in test_images[:3]])
    np.testing.assert_allclose(model(pixels).numpy().sum(axis=1), 2.0, atol=1e-4)


@pytest.mark.slow
def test_export_from_the_command_line(trained_run, tmp_path):
    # The flags as `serve` spells them; the earlier --base-path/--name still work.
    result = run_cli(
        "export", str(trained_run), "--model-base-path", str(tmp_path), "--model-name", "fashion"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Exported version 1" in result.stdout
    assert (tmp_path / "fashion" / "1" / "saved_model.pb").is_file()
    again = run_cli("export", str(trained_run), "--base-path", str(tmp_path), "--name", "fashion")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "fashion" / "2" / "saved_model.pb").is_file()
    bad = run_cli("export", str(tmp_path / "missing"), "--base-path", str(tmp_path))
    assert bad.returncode == 2 and "No run directory or model file" in bad.stderr


def test_the_paper_variant_exports_and_serves_quietly(tmp_path):
    """The paper variant's grouped convolutions run through a function Keras makes anew per
    call on a CPU: its export printed four tf.function retracing warnings."""
    from tf_alexnet import AlexNet

    model = AlexNet(input_shape=(67, 67, 3), variant="paper", width=0.25, classes=4)
    model.save(tmp_path / "paper.keras")
    rng = np.random.default_rng(0)
    images = [
        tf.io.encode_png(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)).numpy()
        for _ in range(3)
    ]
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(image)
    result = run_cli(
        "export",
        str(tmp_path / "paper.keras"),
        "--model-base-path",
        str(tmp_path / "models"),
        "--sample-images",
        *(str(tmp_path / f"{i}.png") for i in range(3)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retracing" not in result.stderr, result.stderr[-3000:]
    serve = tf.saved_model.load(str(tmp_path / "models" / "alexnet" / "1"))
    outputs = serve.signatures[contract.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant(images))
    pixels = tf.stack([tf.io.decode_png(image) for image in images])
    pixels = tf.image.resize(tf.cast(pixels, tf.float32) / 255, (67, 67), antialias=True)
    expected = tf.nn.softmax(model(pixels)).numpy()  # the paper variant outputs logits
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-4)


@pytest.fixture(scope="module")
def mini_model(tmp_path_factory):
    """A small untrained `mini` model file at 28x28x1 (exports in seconds)."""
    from tf_alexnet import AlexNet

    path = tmp_path_factory.mktemp("mini") / "mini.keras"
    AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25).save(path)
    return path


@pytest.fixture(scope="module")
def diverged_model(mini_model, tmp_path_factory):
    """`mini_model` with NaN weights, as a diverged training leaves them."""
    model = load_model(mini_model, compile=False)
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("nan") / "diverged.keras"
    model.save(path)
    return path


def _png(height=28, width=28, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 1), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def test_sample_images_that_do_not_decode_are_one_line_and_leave_no_folder(
    mini_model, tmp_path, capsys
):
    """A text file as --sample-images ended in a 25-line traceback (Unknown image file format
    [Op:DecodeImage]) and left an empty `<base>/alexnet/`."""
    from tf_alexnet.cli import main

    text, empty, corrupt = tmp_path / "notimg.png", tmp_path / "empty.png", tmp_path / "cut.png"
    text.write_text("not an image\n")
    empty.write_bytes(b"")
    corrupt.write_bytes(_png()[:60])  # a PNG signature, then cut short
    base = tmp_path / "models"
    for path, reason in (
        (text, "not a JPEG, PNG, GIF, BMP or WebP image"),
        (empty, "an empty file"),
        (corrupt, "a PNG file that could not be decoded"),
    ):
        argv = ["export", str(mini_model), "--base-path", str(base), "--sample-images"]
        assert main([*argv, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tf-alexnet: error: The sample image {str(path)!r} is {reason}")
        assert err.count("\n") == 1
        assert not base.exists()
    with pytest.raises(UserError, match="Sample image 2 of 2 is not a JPEG, PNG"):
        export(mini_model, base, sample_images=[_png(), b"text"])
    assert not base.exists()


def test_a_failed_export_removes_the_folders_it_made(mini_model, tmp_path):
    def crash(folder):
        raise RuntimeError("disk full")

    base = tmp_path / "new" / "models"
    with pytest.raises(RuntimeError, match="disk full"):
        export(mini_model, base, sample_images=[_png()], before_publish=crash)
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_non_finite_outputs_is_not_exported(diverged_model, tmp_path, monkeypatch):
    """A diverged training (NaN weights) exported with "max |difference| to Keras nan"."""
    from tf_alexnet import export as export_lib

    base = tmp_path / "models"
    with pytest.raises(UserError, match=r"The model's outputs are not finite \(NaN/inf\): the "):
        export(diverged_model, base, sample_images=[_png()])
    assert not base.exists()

    # And the comparison itself: a NaN difference fails it (NaN > tolerance is False).
    def unchecked(model, images):
        pixels = export_lib.encoded_batch(images, model.input_shape[1:])
        return pixels, export_lib.sample_outputs(model, pixels)

    monkeypatch.setattr(export_lib, "check_samples", unchecked)
    with pytest.raises(export_lib.ExportMismatch, match=r"max \|difference\| nan > 1e-05"):
        export(diverged_model, base, sample_images=[_png()])
    assert not base.exists()


def test_a_version_reaches_the_disk_before_its_rename_and_the_rename_after(
    mini_model, tmp_path, disk_syncs
):
    """Nothing was synced: a rename's metadata can reach the disk before the data written under
    the old name, so after a power loss the version folder could hold empty or cut-short files.
    Every file and folder of the version is synced before the rename, the model folder after,
    and the folders the export made, in their parents (a first export into a new base could
    vanish whole)."""
    result = export(mini_model, tmp_path / "new" / "models", sample_images=[_png()])
    before, after = synced_around(disk_syncs, result.path)
    version = [result.path, *result.path.rglob("*")]
    assert {path.is_file() for path in version} == {True, False}  # files and folders
    assert [str(p.relative_to(result.path)) for p in version if inode(p) not in before] == []
    made = [result.path.parent, *result.path.parent.parents][:4]  # alexnet, models, new, tmp
    assert [str(folder) for folder in made if inode(folder) not in after] == []


def test_killed_exports_of_other_containers_are_told_by_their_lock(mini_model, tmp_path):
    """Each compose container has its own host name and pids: the temporary folder of a trainer
    killed mid-export (11 MB for mini, 190 MB for d2l) was left for ever by every later one."""
    import fcntl
    import socket

    from tf_alexnet.export import LOCK_SUFFIX, remove_stale_temps

    model_dir = tmp_path / "alexnet"
    other = f"not-{socket.gethostname()}"
    killed, live = f".tmp-7-183@{other}", f".tmp-8-183@{other}"  # the same pid, elsewhere
    for name in (killed, live):
        (model_dir / name / "variables").mkdir(parents=True)
        (model_dir / (name + LOCK_SUFFIX)).touch()
    orphan = model_dir / f".tmp-9-184@{other}{LOCK_SUFFIX}"  # killed just after its publish
    orphan.touch()
    holder = subprocess.Popen(  # the live export: holds its lock until told to stop
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            str(model_dir / (live + LOCK_SUFFIX)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        assert [p.name for p in remove_stale_temps(model_dir)] == [killed]
        assert sorted(p.name for p in model_dir.iterdir()) == [live, live + LOCK_SUFFIX]
    finally:
        holder.communicate("")
    assert [p.name for p in remove_stale_temps(model_dir)] == [live]  # its export ended
    assert list(model_dir.iterdir()) == []

    held = []

    def check_the_lock(temp):
        lock = temp.with_name(temp.name + LOCK_SUFFIX)
        descriptor = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # held by the export while it builds
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
        held.append(lock.name)

    result = export(mini_model, tmp_path, sample_images=[_png()], before_publish=check_the_lock)
    assert held and sorted(p.name for p in model_dir.iterdir()) == [str(result.version)]


def test_the_next_export_removes_the_temporary_folders_of_killed_ones(mini_model, tmp_path):
    """A killed export left `alexnet/.tmp-<version>-<pid>/` behind for ever."""
    import os
    import socket

    from tf_alexnet.export import remove_stale_temps, temp_name

    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(finished.stdout)
    host = socket.gethostname()
    model_dir = tmp_path / "alexnet"
    names = {
        "old-style": f".tmp-3-{dead}",  # as earlier versions named them: this host's
        "killed": f".tmp-4-{dead}@{host}",
        "running": f".tmp-5-{os.getppid()}@{host}",  # a live process: never touched
        "mine": temp_name(6),
        "other-host": f".tmp-7-{dead}@not-{host}",  # another machine's pids mean nothing here
    }
    for name in names.values():
        (model_dir / name / "variables").mkdir(parents=True)
    (model_dir / "2").mkdir()
    assert sorted(p.name for p in remove_stale_temps(model_dir)) == sorted(
        [names["old-style"], names["killed"]]
    )
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        ["2", names["running"], names["mine"], names["other-host"]]
    )
    (model_dir / names["killed"]).mkdir()
    result = export(mini_model, tmp_path, sample_images=[_png()])
    assert result.version == 3  # next after the integer names ("2")
    assert not (model_dir / names["killed"]).exists()
    assert (model_dir / names["running"]).is_dir()


def _served_probabilities(result, images):
    outputs = load_exported_signature(result.path)(
        **{contract.INPUT_IMAGE_BYTES: tf.constant(images)}
    )
    return outputs[contract.OUTPUT_PROBABILITIES].numpy()


def load_exported_signature(path):
    return tf.saved_model.load(str(path)).signatures[contract.SIGNATURE_IMAGE_BYTES]


def test_an_export_serves_a_nested_softmax_once(tmp_path):
    """The export of a model wrapping a softmax classifier served softmax(softmax(x))."""
    from tests.tf_alexnet.test_predict import png32, wrapped_models

    images = [png32(0), png32(1)]
    for kind, model in list(wrapped_models().items())[:2]:
        path = tmp_path / f"{kind}.keras"
        model.save(path)
        result = export(path, tmp_path / kind, sample_images=images)
        served = _served_probabilities(result, images)
        expected = np.asarray(model(np.zeros((1, 32, 32, 3), np.float32)))
        assert served[:, 0].min() > 0.999, kind
        np.testing.assert_allclose(served[0], expected[0], atol=1e-3)


@pytest.mark.parametrize("kind", ["any size", "avg features", "sigmoid", "uint8 input"])
def test_a_model_export_cannot_serve_is_one_line(kind, tmp_path, capsys):
    from tests.tf_alexnet.test_predict import FEATURES_MESSAGES, features_models, png32
    from tf_alexnet.cli import main

    image = tmp_path / "image.png"
    image.write_bytes(png32())
    path = tmp_path / "model.keras"
    features_models()[kind].save(path)
    base = tmp_path / "models"
    argv = ["export", str(path), "--model-base-path", str(base), "--sample-images", str(image)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert FEATURES_MESSAGES[kind] in err and err.count("\n") == 1, err
    assert not base.exists()


def _image_folder(root, classes):
    from tests.tf_alexnet.test_predict import png32

    for c, name in enumerate(classes):
        for split in ("train", "test"):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                (root / split / name / f"{i}.png").write_bytes(png32(10 * c + i))
    return root


def test_an_exported_keras_file_keeps_its_runs_class_names(tmp_path, capsys):
    """`export runs/ds10/best.keras` wrote Fashion-MNIST's names for classes c00..c09, and a
    3-class file got class_0.. even with --image-folder ds3."""
    from tests.tf_alexnet.test_predict import confident_mini, png32
    from tf_alexnet.cli import main

    image = tmp_path / "image.png"
    image.write_bytes(png32())
    run = tmp_path / "ds10"
    run.mkdir()
    names10 = [f"c{i:02d}" for i in range(10)]
    (run / "metrics.json").write_text(json.dumps({"class_names": names10}))
    confident_mini(classes=10).save(run / "best.keras")
    base = tmp_path / "m"
    argv = ["export", str(run / "best.keras"), "--model-base-path", str(base)]
    assert main([*argv, "--sample-images", str(image)]) == 0, capsys.readouterr().err
    assert (base / "alexnet" / "1" / "assets" / "class_names.txt").read_text().split() == names10

    ds3 = _image_folder(tmp_path / "ds3", ["ant", "bee", "cat"])
    confident_mini(classes=3).save(tmp_path / "three.keras")
    for version, extra in ((1, []), (2, ["--sample-images", str(image)])):
        argv = ["export", str(tmp_path / "three.keras"), "--model-base-path", str(base / "3")]
        assert main([*argv, "--image-folder", str(ds3), *extra]) == 0, capsys.readouterr().err
        names = (base / "3" / "alexnet" / str(version) / "assets" / "class_names.txt").read_text()
        assert names.split() == ["ant", "bee", "cat"], extra


def test_versions_stay_within_what_tf_serving_reads(mini_model, tmp_path, capsys):
    """`export --version 99999999999999999999` exported (status 0), and the automatic versions
    went on above it: TF Serving reads version folders as int64 and ignores those."""
    from tf_alexnet.cli import main

    highest = 2**63 - 1
    base = tmp_path / "models"
    for version in (2**63, 10**20, 0):
        with pytest.raises(UserError, match=r"from 1 to 2\*\*63-1 .* Received: "):
            export(mini_model, base, version=version, sample_images=[_png()])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(mini_model), "--version", "99999999999999999999"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "tf-alexnet export: error: argument --version: should be an integer from 1 to "
        f"{2**63 - 1}. Received: '99999999999999999999' (see tf-alexnet export --help)\n"
    )
    (base / "alexnet" / str(highest)).mkdir(parents=True)  # the highest there can be
    with pytest.raises(UserError, match=r"would be 9223372036854775808, beyond TF Serving's"):
        export(mini_model, base, sample_images=[_png()])
    assert sorted(p.name for p in (base / "alexnet").iterdir()) == [str(highest)]
    assert highest == contract.MAX_VERSION


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_model_with_large_logits_exports(policy, test_images, tmp_path):
    """A run whose training diverged (logits of 52 on its samples) could not be exported:
    "max |difference| 1.01e-05 > 1e-05" in float32, and 0.27 > 0.05 against its bf16 self:
    rounding alone, which grows with the logits. Here two classes are near a tie at logits of
    about 200 (in float32, 1.5e-5 apart)."""
    import keras

    from tf_alexnet import AlexNet, startup
    from tf_alexnet.export import (
        MAX_ABS_DIFFERENCE,
        TRAINING_PRECISION_TOLERANCE,
        logit_scale,
        sample_outputs,
    )
    from tf_alexnet.preprocess import encoded_batch

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = AlexNet(variant="mini", input_shape=(28, 28, 1), classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    kernel, bias = model.layers[-1].get_weights()
    rng = np.random.default_rng(0)
    kernel[:, 1] = kernel[:, 0] + 1e-4 * rng.standard_normal(kernel.shape[0])
    model.layers[-1].set_weights([kernel * 3000, bias])
    model.save(tmp_path / "large.keras")
    samples = [
        tf.io.encode_png(rng.integers(0, 256, (28, 28, 1)).astype(np.uint8)).numpy()
        for _ in range(8)
    ]
    pixels = encoded_batch(samples, (28, 28, 1))
    scale = logit_scale(model, sample_outputs(model, pixels))
    assert 20 < scale < 100  # logits of ~200 over 5
    result = export(tmp_path / "large.keras", tmp_path / "models", sample_images=samples)
    assert result.max_abs_difference <= MAX_ABS_DIFFERENCE * scale
    metadata = json.loads((result.path / "assets.extra" / "metadata.json").read_text())
    to_trained = metadata["precision"]["max_abs_difference_to_trained"]
    assert to_trained <= TRAINING_PRECISION_TOLERANCE[policy] * scale
    if policy == "float32" and startup.onednn_in_use():
        # Past the fixed tolerance: this export was refused. oneDNN's fused kernels round the
        # SavedModel's graph apart from Keras (as `tf-alexnet export` runs on every x86 CPU);
        # Eigen's, which a library process gets on an AVX2-only CPU, computed both alike
        # (3.5e-8 apart on an AMD EPYC).
        assert max(result.max_abs_difference, to_trained) > MAX_ABS_DIFFERENCE
    # The tolerances grow only with the logits: a model with small ones keeps them.
    small = AlexNet(variant="mini", input_shape=(28, 28, 1), classes=3)
    assert logit_scale(small, sample_outputs(small, pixels)) == 1


def test_a_full_disk_while_exporting_names_the_model_folder(
    mini_model, tmp_path, monkeypatch, capsys
):
    """A write refused at its close names no file (Python's buffered `write_text` of
    metadata.json on a full disk): `export` said only "No space left on device."."""
    import errno

    from tf_alexnet.cli import main
    from tf_alexnet.exported import ExportedModel

    def disk_full(self, metadata):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ExportedModel, "write_metadata", disk_full)
    sample = tmp_path / "sample.png"
    sample.write_bytes(_png())
    base = tmp_path / "models"
    argv = ["export", str(mini_model), "--base-path", str(base), "--sample-images", str(sample)]
    assert main(argv) == 1
    said = f"tf-alexnet: error: No space left on device: '{base / 'alexnet'}'.\n"
    assert capsys.readouterr().err == said
    assert not base.exists()
