"""The evaluation report: per-class and averaged scores, counts and normalized confusion matrix."""

import os

import numpy as np
import pytest

from tf_alexnet import plots
from tf_alexnet.columns import screen_width
from tf_alexnet.evaluate import classification_report, format_report

# Three classes; "fox" is never the true class, and "cat" is never predicted right.
Y_TRUE = np.array([0, 0, 1, 1, 1, 1])
Y_PRED = np.array([1, 2, 1, 1, 1, 0])
NAMES = ("cat", "dog", "fox")


@pytest.fixture
def report():
    probabilities = np.eye(3)[Y_PRED] * 0.8 + 0.2 / 3
    return classification_report(Y_TRUE, probabilities, NAMES)


def test_macro_and_weighted_averages(report):
    # dog: precision 3/4, recall 3/4, f1 3/4; cat: 0, 0, 0; fox: 0 (predicted once, wrongly).
    assert report["per_class"]["dog"] == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    )
    assert report["macro_avg"] == pytest.approx(
        {"precision": 0.25, "recall": 0.25, "f1": 0.25, "support": 6}
    )
    # Weighted by support (cat 2, dog 4, fox 0): 4/6 of dog's scores.
    assert report["weighted_avg"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 6}
    )
    assert report["accuracy"] == pytest.approx(0.5)


def test_normalized_confusion_matrix_beside_the_counts(report):
    assert report["confusion_matrix"] == [[0, 1, 1], [1, 3, 0], [0, 0, 0]]
    np.testing.assert_allclose(
        report["confusion_matrix_normalized"],
        [[0.0, 0.5, 0.5], [0.25, 0.75, 0.0], [0.0, 0.0, 0.0]],  # fox has no examples
    )


def test_the_printed_report_shows_the_averages(report):
    lines = format_report(report).splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert [line.split()[0] for line in lines[1:4]] == list(NAMES)
    assert lines[4] == ""
    assert lines[5].split() == ["macro", "avg", "0.2500", "0.2500", "0.2500", "6"]
    assert lines[6].split() == ["weighted", "avg", "0.5000", "0.5000", "0.5000", "6"]
    assert lines[7].startswith("test accuracy 0.5000")


def test_the_printed_report_lines_up_long_and_wide_class_names():
    """Its first column was 14 characters: a longer name pushed its row to the right, and so
    did a CJK name, whose characters take two columns each on screen."""
    names = ("golden_retriever_puppies", "靴靴靴靴靴靴靴靴", "cat")
    report = classification_report(Y_TRUE, np.eye(3)[Y_PRED] * 0.8 + 0.2 / 3, names)
    lines = format_report(report).splitlines()
    assert lines[0] == "class" + " " * 20 + "precision  recall     f1  support"
    assert lines[2] == "靴靴靴靴靴靴靴靴" + " " * 9 + "   0.7500  0.7500 0.7500        4"
    ends = {screen_width(line) for line in lines[:7] if line}  # every column in line
    assert ends == {screen_width(lines[0])}


def test_the_plot_has_both_matrices(report, tmp_path):
    import matplotlib.image

    path = tmp_path / "confusion_matrix.png"
    plots.confusion_matrix(
        np.array(report["confusion_matrix"]),
        np.array(report["confusion_matrix_normalized"]),
        NAMES,
        path,
        title="Test accuracy 0.5000",
    )
    height, width, _ = matplotlib.image.imread(path).shape
    assert width == 2 * height  # two square panels side by side


def test_the_training_and_evaluation_api_leave_matplotlibs_backend_alone(tmp_path):
    """`import tf_alexnet.evaluate` (or `.train`) switched the process to Agg: a notebook
    that trained from Python lost its inline figures."""
    import subprocess
    import sys

    code = (
        "import matplotlib\n"
        "import tf_alexnet.evaluate, tf_alexnet.train\n"
        "from tf_alexnet import plots\n"
        f"plots.training_curves([{{'epoch': 0, 'loss': 1.0}}], {str(tmp_path / 'c.png')!r})\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split()[-1:] == ["svg"], result.stderr[-2000:]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_class_names_the_font_lacks_draw_without_warnings(report, tmp_path):
    """CJK folder names made `evaluate` print matplotlib's "Glyph 29483 missing from font(s)
    DejaVu Sans" UserWarning, once per glyph."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        plots.confusion_matrix(
            np.array(report["confusion_matrix"]),
            np.array(report["confusion_matrix_normalized"]),
            ("猫", "犬", "狐"),
            tmp_path / "cm.png",
            title="猫と犬",
        )
    assert (tmp_path / "cm.png").stat().st_size > 0
    # Other warnings still show.
    with pytest.warns(UserWarning, match="another"), plots._missing_glyphs_quiet():
        warnings.warn("another warning", UserWarning, stacklevel=1)


def test_a_nested_softmax_model_is_scored_once(tmp_path):
    """evaluate's loss was 0.3133 instead of 5.7e-05: the nested softmax applied twice."""
    from tests.tf_alexnet.test_predict import wrapped_models
    from tf_alexnet.evaluate import keras_scorer

    pixels = np.zeros((2, 32, 32, 3), np.float32)
    for kind, model in wrapped_models().items():
        path = tmp_path / f"{kind}.keras"
        model.save(path)
        probabilities = keras_scorer(path).probabilities(pixels)
        np.testing.assert_allclose(probabilities, np.asarray(model(pixels)), atol=1e-5)
        loss = classification_report(np.array([0, 0]), probabilities, ("a", "b"))["loss"]
        assert loss < 1e-3, kind


@pytest.mark.parametrize("kind", ["any size", "avg features", "sigmoid"])
def test_a_model_evaluate_cannot_score_is_one_line(kind, tmp_path, capsys):
    """A None-size model ended in `TypeError: '>' not supported between ... 'NoneType'`."""
    from tests.tf_alexnet.test_export import _image_folder
    from tests.tf_alexnet.test_predict import FEATURES_MESSAGES, features_models
    from tf_alexnet.cli import main

    folder = _image_folder(tmp_path / "data", ["a", "b"])
    path = tmp_path / "model.keras"
    features_models()[kind].save(path)
    argv = ["evaluate", str(path), "--image-folder", str(folder), "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert FEATURES_MESSAGES[kind] in err and err.count("\n") == 1, err


def test_a_perfect_loss_prints_without_a_sign():
    """Probabilities of 1 for the true classes: the loss is -log(1) = -0.0, which the table
    printed as "loss -0.0000" (and evaluation.json kept as -0.0)."""
    probabilities = np.eye(3)[Y_TRUE]
    report = classification_report(Y_TRUE, probabilities, NAMES)
    assert report["loss"] == 0.0 and np.copysign(1.0, report["loss"]) == 1.0
    report["macro_avg"]["f1"] = -1e-9  # any value that rounds to zero
    text = format_report(report)
    assert "-0.0000" not in text and "loss 0.0000 on 6 images" in text
    assert "macro avg         0.6667  0.6667 0.0000        6" in text


def test_a_picture_a_full_disk_refuses_names_its_file_and_keeps_the_last_one(tmp_path):
    """matplotlib writes into the file itself and names no file when a write fails: a full
    disk as training finished said only "No space left on device." and left an empty
    training_curves.png. (A file-size limit stands in for the full disk.)"""
    import errno
    import resource

    path = tmp_path / "training_curves.png"
    path.write_bytes(b"the last picture")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OSError) as raised:
            plots.training_curves([{"epoch": 0, "loss": 1.0}], path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(path)
    assert path.read_bytes() == b"the last picture"
    assert [child.name for child in tmp_path.iterdir()] == [path.name]


def test_a_runs_test_accuracy_is_of_the_model_evaluate_scored(tmp_path, capsys):
    """`evaluate RUN_DIR` while the run still trained (or before its best.keras was replaced):
    `export` copied that report's accuracy into the newer model's metadata as its own."""
    import json

    from tests.tf_alexnet.test_export import _image_folder
    from tests.tf_alexnet.test_predict import confident_mini, png32
    from tf_alexnet import config as config_lib
    from tf_alexnet.cli import main
    from tf_alexnet.export import export
    from tf_alexnet.run_dir import RunDir, in_use_by_this_process, resolve_source

    folder = _image_folder(tmp_path / "data", ["a", "b"])
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    config = config_lib.resolve("quick", overrides={"image_folder": str(folder)})
    run.write_json(run.config, config.to_dict())
    run.write_json(run.classes, {"class_names": ["a", "b"]})
    confident_mini().save(run.best_model)  # class 0 for every image: accuracy 0.5
    with in_use_by_this_process(run.root):  # a training holds the run
        assert main(["evaluate", str(run.root)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith(
        f"Note: {str(run.root)!r} is still training: this report describes its best.keras as "
        "of now.\n"
    )
    assert resolve_source(run.root)[1] == {"test_accuracy": 0.5}
    assert capsys.readouterr().out == ""

    confident_mini(name="newer").save(run.best_model)  # the training's next best model
    assert resolve_source(run.root)[1] == {}
    assert "its test accuracy is left out" in capsys.readouterr().out
    result = export(run.root, tmp_path / "models", sample_images=[png32()])
    metadata = json.loads((result.path / "assets.extra" / "metadata.json").read_text())
    assert metadata["training_metrics"] == {}
