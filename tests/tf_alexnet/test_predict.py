"""`tf-alexnet predict` and the Predictor over SavedModels and .keras files."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import flat_png, run_cli
from tf_alexnet.errors import UserError
from tf_alexnet.export import export
from tf_alexnet.predict import predict_files


@pytest.fixture(scope="module")
def images(test_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, data in enumerate(test_images[:3]):
        path = folder / f"image{i}.png"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def exported_dir(trained_run, test_images, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    return export(trained_run, base, sample_images=test_images[:2]).path.parent


def test_savedmodel_and_keras_agree(images, exported_dir, trained_run):
    from_saved = predict_files(images, exported_dir, top_k=3)
    from_keras = predict_files(images, trained_run / "best.keras", top_k=3)
    for a, b in zip(from_saved, from_keras, strict=True):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        np.testing.assert_allclose([p for *_, p in a.top], [p for *_, p in b.top], atol=1e-5)
        assert len(a.top) == 3 and a.top[0][2] >= a.top[1][2] >= a.top[2][2]


def test_a_run_directory_predicts_with_its_best_model(images, trained_run, tmp_path):
    """`--model RUN_DIR`, as `export` and `evaluate` take it: the run's best model, its names."""
    from_run = predict_files(images, trained_run, top_k=2)
    from_keras = predict_files(images, trained_run / "best.keras", top_k=2)
    assert [p.top for p in from_run] == [p.top for p in from_keras]
    assert all(p.error is None and len(p.top) == 2 for p in from_run)
    (tmp_path / "config.json").write_text("{}")  # a run killed before its first model
    with pytest.raises(UserError, match=r"has no saved model yet: it saves best\.keras after"):
        predict_files(images, tmp_path)


def test_many_files_are_predicted_in_batches(images, exported_dir, monkeypatch):
    """Thousands of files on a command line were one batch (memory grows with it)."""
    from tf_alexnet import predict

    whole = predict_files(images, exported_dir)
    sizes = []
    probabilities = predict.Predictor.probabilities

    def recorded(self, encoded):
        sizes.append(len(encoded))
        return probabilities(self, encoded)

    monkeypatch.setattr(predict, "PREDICT_BATCH", 2)
    monkeypatch.setattr(predict.Predictor, "probabilities", recorded)
    batched = predict_files(images, exported_dir)
    assert len(images) == 3 and sizes == [2, 1]
    for one, other in zip(batched, whole, strict=True):
        assert [i for i, _, _ in one.top] == [i for i, _, _ in other.top]
        np.testing.assert_allclose([p for *_, p in one.top], [p for *_, p in other.top], atol=1e-6)


@pytest.mark.parametrize("model", ["exported", "keras"])
def test_images_are_decoded_once_unless_one_of_a_batch_does_not_decode(
    model, images, exported_dir, trained_run, tmp_path, monkeypatch
):
    """Each image was decoded to check it, then again by the model: a 7 MB photo's check took
    longer than the exported model's call. Now only a batch that fails is checked, image by
    image, and its good images are scored again, as they would have been alone."""
    from tf_alexnet import predict

    path = exported_dir if model == "exported" else trained_run / "best.keras"
    alone = predict_files(images, path, top_k=2)
    checked, calls = [], []
    image_problem, probabilities = predict.image_problem, predict.Predictor.probabilities

    def check(data):
        checked.append(data)
        return image_problem(data)

    def scored(self, encoded):
        calls.append(len(encoded))
        return probabilities(self, encoded)

    monkeypatch.setattr(predict, "image_problem", check)
    monkeypatch.setattr(predict.Predictor, "probabilities", scored)
    assert [p.top for p in predict_files(images, path, top_k=2)] == [p.top for p in alone]
    assert checked == [] and calls == [3]

    cut = tmp_path / "cut.png"
    cut.write_bytes(pathlib.Path(images[1]).read_bytes()[:40])
    calls.clear()
    mixed = predict_files([images[0], str(cut), images[2]], path, top_k=2)
    assert len(checked) == 3 and calls == [3, 2]
    assert mixed[0].error is None and mixed[2].error is None
    assert mixed[1].error.startswith("a PNG file that could not be decoded (")
    for again, first in ((mixed[0], alone[0]), (mixed[2], alone[2])):  # a batch of 2, not 3:
        # Eigen's kernels (an AVX2-only CPU) round a batch's outputs by its size, 1e-7 apart
        assert [top[:2] for top in again.top] == [top[:2] for top in first.top]
        assert [top[2] for top in again.top] == pytest.approx([top[2] for top in first.top])


def test_images_are_read_a_batch_at_a_time_and_answered_as_they_are_scored(
    images, exported_dir, tmp_path, monkeypatch, capsys
):
    """All of a folder's images were read into memory before the first was scored (a folder
    of phone photos filled it), and nothing was printed until the last was scored."""
    from tf_alexnet import predict
    from tf_alexnet.cli import main

    missing = str(tmp_path / "missing.png")
    asked = [images[0], missing, images[1], images[2]]
    events, outs, errs = [], [], []
    read_image, probabilities = predict._read_image, predict.Predictor.probabilities

    def read(path):
        out, err = capsys.readouterr()
        outs.append(out)
        errs.append(err)
        events.append(("read", os.path.basename(path), "".join(outs).count("  1. ")))
        return read_image(path)

    def scored(self, encoded):
        events.append(("score", len(encoded)))
        return probabilities(self, encoded)

    monkeypatch.setattr(predict, "PREDICT_BATCH", 2)
    monkeypatch.setattr(predict, "_read_image", read)
    monkeypatch.setattr(predict.Predictor, "probabilities", scored)
    assert main(["predict", *asked, "--model", str(exported_dir), "--top-k", "1"]) == 2
    # (read, file, answers printed so far): the third image is read after the first two
    # readable ones were scored and printed; the unreadable one does not fill a batch.
    assert events == [
        ("read", "image0.png", 0),
        ("read", "missing.png", 0),
        ("read", "image1.png", 0),
        ("score", 2),
        ("read", "image2.png", 2),
        ("score", 1),
    ]
    out, err = capsys.readouterr()
    assert out.count("  1. ") == 1 and out.startswith(images[2])
    assert "".join(outs).startswith(images[0]) and images[1] in "".join(outs)
    assert "".join([*errs, err]) == f"tf-alexnet: error: {missing}: No such file or directory\n"
    # The answers are the same, in the order asked, as a list.
    listed = predict_files(asked, exported_dir, top_k=1)
    assert [p.image for p in listed] == asked and listed[1].error == "No such file or directory"


def test_table_and_json_output(images, exported_dir):
    result = run_cli("predict", *images[:2], "--model", str(exported_dir), "--top-k", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == images[0] and lines[1].startswith("  1. ") and lines[3] == images[1]
    result = run_cli("predict", images[0], "--model", str(exported_dir), "--json")
    answer = json.loads(result.stdout)
    assert answer[0]["image"] == images[0] and len(answer[0]["predictions"]) == 5
    assert abs(sum(p["score"] for p in answer[0]["predictions"]) - 1) < 0.5
    # Each class as the API's top_k names it: a script reads both the same way (the CLI said
    # "probability" where the API says "score").
    from tf_alexnet_serving.schemas import TopClass

    for found in answer[0]["predictions"]:
        assert TopClass.model_validate(found).model_dump() == found


def test_bad_files_get_one_line_and_the_rest_are_answered(images, exported_dir, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "cut.png"  # a PNG's signature and header, then cut short: not "not a PNG"
    corrupt.write_bytes(pathlib.Path(images[0]).read_bytes()[:100])
    result = run_cli(
        "predict",
        str(tmp_path / "missing.png"),
        images[0],
        str(text),
        str(empty),
        str(corrupt),
        "--model",
        str(exported_dir),
    )
    assert result.returncode == 2  # mistakes in what was asked, as README says (it was 1)
    assert images[0] in result.stdout and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tf-alexnet: error:")]
    assert errors == [
        f"tf-alexnet: error: {tmp_path / 'missing.png'}: No such file or directory",
        f"tf-alexnet: error: {text}: not a JPEG, PNG, GIF, BMP or WebP image",
        f"tf-alexnet: error: {empty}: an empty file",
        f"tf-alexnet: error: {corrupt}: a PNG file that could not be decoded (Invalid PNG data, "
        "size 100)",
    ]


def test_missing_model_is_a_user_error(images, tmp_path):
    with pytest.raises(UserError, match="No model at"):
        predict_files(images, tmp_path / "nothing")
    with pytest.raises(UserError, match="No exported SavedModel"):
        predict_files(images, tmp_path)


def test_a_saved_model_that_is_not_an_export_is_named_as_such(images, tmp_path):
    """It said "has no class names asset", as if the export had lost a file."""
    from tf_alexnet.model import AlexNet

    AlexNet(input_shape=(28, 28, 1), variant="mini", width=0.25).export(
        str(tmp_path / "1"), verbose=False
    )
    with pytest.raises(UserError, match=r"/1' is not a tf-alexnet export: its 'serving_default'"):
        predict_files(images, tmp_path)


def test_a_folder_stands_for_its_images(images, exported_dir, tmp_path):
    """`predict photos/` said "Is a directory": a folder is read as its images, at any depth."""
    import shutil

    folder = tmp_path / "photos"
    (folder / "inner").mkdir(parents=True)
    shutil.copy(images[0], folder / "b.png")
    shutil.copy(images[1], folder / "inner" / "a.PNG")
    shutil.copy(images[2], folder / ".hidden.png")
    (folder / "scan.tiff").write_bytes(b"II*\x00")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = run_cli(
        "predict", str(folder), images[2], str(tmp_path / "empty"), "--model", str(exported_dir)
    )
    assert result.returncode == 2, result.stderr[-2000:]
    answered = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert answered == [str(folder / "b.png"), str(folder / "inner" / "a.PNG"), images[2]]
    errors = [line for line in result.stderr.splitlines() if "tf-alexnet: error:" in line]
    assert errors == [
        f"tf-alexnet: error: {tmp_path / 'empty'}: a folder without JPEG, PNG, GIF, BMP or WebP "
        "images"
    ]
    assert (
        "Skipped 2 file(s) that are not JPEG, PNG, GIF, BMP or WebP images (1 .tiff, 1 .txt), "
        f"e.g. {str(folder / 'scan.tiff')!r}.\n"
    ) in result.stderr


def test_an_image_of_too_many_pixels_is_named_and_not_decoded(images, exported_dir, tmp_path):
    """A 97 KB PNG of 10000x10000 took predict 2.5 GB to decode and resize; one of 40000x40000
    (1.5 MB) would have taken about 40 GB. Over `LOCAL_MAX_PIXELS`, predict refuses it from the
    header, as the facade does uploads over its own limit."""
    from tf_alexnet.image_header import LOCAL_MAX_PIXELS

    huge = tmp_path / "huge.png"
    huge.write_bytes(flat_png(15_000, 14_000))
    assert 15_000 * 14_000 > LOCAL_MAX_PIXELS == 200_000_000
    first, second = predict_files([str(huge), images[0]], exported_dir)
    assert first.error == (
        "image of 15000x14000 pixels is over the limit of 200,000,000 pixels; scale it down first"
    )
    assert second.error is None and len(second.top) == 5


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(images, exported_dir, tmp_path):
    """Under a strict UTF-8 locale (a desktop's en_US.UTF-8), one such name failed the whole
    command: "'utf-8' codec can't encode character '\\udcff' ... surrogates not allowed"."""
    folder = os.fsencode(tmp_path / "photos")
    os.mkdir(folder)
    with open(folder + b"/caf\xe9.png", "wb") as file:
        file.write(pathlib.Path(images[0]).read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "tf_alexnet.cli", "predict", folder, "--model", exported_dir],
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stdout.splitlines()[0] == folder + b"/caf\xe9.png"  # the name's own bytes
    answer = json.loads(
        run_cli("predict", images[0], "--model", str(exported_dir), "--json").stdout
    )
    names = [
        line.split(b". ", 1)[1].rsplit(None, 1)[0].strip()
        for line in result.stdout.splitlines()[1:]
    ]
    assert names == [row["class_name"].encode() for row in answer[0]["predictions"]]


def test_a_newer_version_that_does_not_load_is_passed_over_as_the_server_does(
    images, exported_dir, tmp_path, capsys
):
    """A version caught half copied (`cp -r` of a new export) failed `predict --model
    models/alexnet`, while the server went on serving the version before it."""
    import shutil

    from tf_alexnet.exported import version_numbers

    model = tmp_path / "alexnet"
    shutil.copytree(exported_dir, model)
    (last,) = version_numbers(model)
    half = model / str(last + 1)
    half.mkdir()
    shutil.copy(model / str(last) / "saved_model.pb", half)  # no variables yet
    expected = predict_files(images, exported_dir)
    capsys.readouterr()
    assert predict_files(images, model) == expected
    note = capsys.readouterr().err
    assert note.startswith(
        f"Note: The exported model {str(half)!r} does not load (damaged, or still being copied?): "
    )
    assert note.endswith(f" Predicting with version {last}.\n") and note.count("\n") == 1
    with pytest.raises(UserError, match="does not load"):  # asked for by its version: refused
        predict_files(images, half)
    shutil.rmtree(model / str(last))
    with pytest.raises(UserError, match="does not load"):  # no version loads
        predict_files(images, model)


def test_the_printed_ranks_line_up_past_nine():
    from tf_alexnet.predict import Prediction, format_predictions

    top = [(i, f"class {i}", 0.1 - i / 1000) for i in range(10)]
    lines = format_predictions([Prediction("a.png", top=top)]).splitlines()
    assert lines[0] == "a.png"
    assert lines[9] == "   9. class 8  0.0920" and lines[10] == "  10. class 9  0.0910"
    assert len({len(line) for line in lines[1:]}) == 1  # one column for the scores
    # Padded by the columns a name takes on screen: 靴 takes two, a combining accent none.
    top = [(0, "靴.v2", 0.5), (1, "Tee\u0301", 0.3), (2, "sandal", 0.2)]
    lines = format_predictions([Prediction("b.png", top=top)]).splitlines()
    assert lines[1:] == ["  1. 靴.v2   0.5000", "  2. Tee\u0301     0.3000", "  3. sandal  0.2000"]


@pytest.mark.slow
def test_a_dash_reads_one_image_from_standard_input(images, exported_dir, tmp_path):
    """`cat shirt.png | tf-alexnet predict --model M -` said "-: No such file or directory"."""
    command = [sys.executable, "-m", "tf_alexnet.cli", "predict", "--model", str(exported_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*command, *args], input=stdin, capture_output=True, timeout=600, env=env, cwd=tmp_path
        )

    (tmp_path / "-").mkdir()  # `-` is standard input even where a folder has that name
    piped = run("--json", "-", images[1], stdin=pathlib.Path(images[0]).read_bytes())
    assert piped.returncode == 0, piped.stderr[-2000:]
    by_file = json.loads(run("--json", images[0], images[1]).stdout)
    answer = json.loads(piped.stdout)
    assert [row["image"] for row in answer] == ["-", images[1]]
    assert answer[0]["predictions"] == by_file[0]["predictions"]
    empty = run("-", images[0])  # nothing piped: one line, the file still answered
    assert empty.returncode == 2 and images[0] in empty.stdout.decode()
    assert empty.stderr.decode().splitlines()[-1] == "tf-alexnet: error: -: an empty file"
    twice = run("-", "-", stdin=pathlib.Path(images[0]).read_bytes())
    assert twice.returncode == 2 and twice.stderr.decode().splitlines()[-1] == (
        "tf-alexnet: error: Standard input (-) holds one image: name it once."
    )


# --- Models from outside the builder's defaults: tiny, untrained, at 32x32x3 -----------------


def confident_mini(activation="softmax", classes=2, name="core"):
    """An untrained mini classifier whose class 0 scores 0.9999 (a bias of +-5 on its top):
    softmax applied twice to that makes 0.7311, which no tolerance confuses."""
    from tf_alexnet import AlexNet

    model = AlexNet(
        variant="mini",
        input_shape=(32, 32, 3),
        classes=classes,
        classifier_activation=activation,
        width=0.25,
        name=name,
    )
    top = model.get_layer("predictions")
    top.bias.assign(np.array([5.0, -5.0][:classes] + [0.0] * (classes - 2), np.float32))
    return model


def wrapped_models():
    """A softmax model's last layer as users write it: a nested model, a Sequential ending in
    Softmax(), an Activation("softmax") layer."""
    import keras

    inputs = keras.Input((32, 32, 3))
    return {
        "nested": keras.Model(inputs, confident_mini()(inputs)),
        "sequential": keras.Sequential(
            [keras.Input((32, 32, 3)), confident_mini(None), keras.layers.Softmax()]
        ),
        "activation": keras.Model(
            inputs, keras.layers.Activation("softmax")(confident_mini(None)(inputs))
        ),
    }


def png32(seed=0, size=32):
    import tensorflow as tf

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def features_models():
    """What predict, export and evaluate cannot score: no fixed size, no classification top,
    or an integer input (it scales 0-255 images itself)."""
    import keras

    from tf_alexnet import AlexNet

    uint8 = keras.Input((32, 32, 3), dtype="uint8")
    return {
        "any size": AlexNet(
            variant="mini", input_shape=(None, None, 3), include_top=False, pooling="avg"
        ),
        "avg features": AlexNet(
            variant="mini", input_shape=(32, 32, 3), include_top=False, pooling="avg"
        ),
        "feature maps": AlexNet(variant="mini", input_shape=(32, 32, 3), include_top=False),
        "sigmoid": confident_mini("sigmoid"),
        "one sigmoid": confident_mini("sigmoid", classes=1),
        "uint8 input": AlexNet(
            variant="mini", input_tensor=keras.layers.Rescaling(1 / 255)(uint8), width=0.25
        ),
    }


FEATURES_MESSAGES = {
    "any size": "should take images of a fixed height and width",
    "avg features": "should end in a classification top",
    "feature maps": "should output class scores of shape (batch, classes)",
    "sigmoid": "logits or softmax probabilities",
    "one sigmoid": "for 2 or more classes",
    "uint8 input": "should take float pixels in [0, 1]",
}


def test_a_softmax_inside_a_nested_model_is_not_applied_twice(tmp_path):
    """0.99995 came out as 0.7311: the wrapped model's softmax was taken for logits."""
    image = tmp_path / "image.png"
    image.write_bytes(png32())
    for kind, model in wrapped_models().items():
        path = tmp_path / f"{kind}.keras"
        model.save(path)
        expected = float(model(np.zeros((1, 32, 32, 3), np.float32))[0, 0])
        (prediction,) = predict_files([str(image)], path, top_k=2)
        assert prediction.top[0][0] == 0, kind
        assert prediction.top[0][2] == pytest.approx(expected, abs=1e-4) and expected > 0.999


@pytest.mark.parametrize("kind", list(FEATURES_MESSAGES))
def test_a_model_predict_cannot_score_is_one_line(kind, tmp_path, capsys):
    """A None-size feature extractor ended in a TypeError traceback (None > None), a
    fixed-size one answered as a 64-class model, a sigmoid one always 1.0, one with a uint8
    input (Rescaling inside) scored every image as a black one: [0, 1] pixels cast to 0."""
    from tf_alexnet.cli import main

    image = tmp_path / "image.png"
    image.write_bytes(png32())
    path = tmp_path / "model.keras"
    features_models()[kind].save(path)
    assert main(["predict", str(image), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tf-alexnet: error: The model {str(path)!r} should ")
    assert FEATURES_MESSAGES[kind] in err and err.count("\n") == 1, err
