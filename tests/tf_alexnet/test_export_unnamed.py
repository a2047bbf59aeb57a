"""A `.keras` file copied out of its run directory has no class names beside it: `export` and
`predict` named its classes with defaults (Fashion-MNIST's for 10 classes) without a word, so a
model trained on ten folders of the user's own images answered "Sneaker" for them."""

import json
import shutil

import numpy as np
import tensorflow as tf

from tf_alexnet.cli import main
from tf_alexnet.exported import ExportedModel

CLASSES = tuple(f"kind{i}" for i in range(10))


def test_a_model_without_class_names_says_which_it_is_given(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (data / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    assert main([*train, "--batch-size", "8", "--run-dir", str(tmp_path / "run")]) == 0
    lone = tmp_path / "deploy" / "model.keras"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "run" / "best.keras", lone)
    image = str(data / "kind3" / "0.png")
    capsys.readouterr()

    base = tmp_path / "models"
    export = ["export", str(lone), "--model-base-path", str(base), "--sample-images", image]
    assert main(export) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"Note: {str(lone)!r} has no class names beside it (no run directory's metrics.json or "
        "classes.json): its 10 classes are named with Fashion-MNIST's defaults ('T-shirt/top', "
        "'Trouser', 'Pullover', ...). Pass --image-folder or --dataset"
    )
    assert out.count("\n") == 2 and "Exported version 1" in out
    # Named by the data it was trained on: no note, the data's names.
    assert main([*export, "--image-folder", str(data)]) == 0
    assert "Note" not in capsys.readouterr().out
    assert ExportedModel.find(base / "alexnet").class_names() == CLASSES

    # predict says it on standard error, so that --json output stays JSON.
    assert main(["predict", image, "--model", str(lone), "--json", "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["image"] == image
    assert err.startswith(f"Note: {str(lone)!r} has no class names beside it")
    assert err.count("\n") == 1 and "Predict with its run directory" in err
    # Its run directory's model is named, without a note.
    assert main(["predict", image, "--model", str(tmp_path / "run"), "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and any(name in out for name in CLASSES)


def test_a_run_that_recorded_no_class_names_is_named_by_its_data(tmp_path, capsys):
    """A run stopped before it finished, by a version from before classes.json, has no class
    names beside its best.keras: `export RUN` and `predict --model RUN` named its classes
    `class_0`, ... and told the user to use its run directory, which they had. The data its
    config.json names names them, when it is at hand. The run is written as that version
    left it: config.json and best.keras, no metrics.json, no classes.json."""
    from tests.conftest import write_image_folder
    from tf_alexnet import AlexNet
    from tf_alexnet import config as config_lib
    from tf_alexnet.predictions import trained_class_names

    data = write_image_folder(tmp_path / "data", {"": 3})
    run = tmp_path / "run"
    run.mkdir()
    config = config_lib.from_dict({"variant": "mini", "image_size": 28, "image_folder": str(data)})
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "history.csv").write_text("epoch,loss\n0,0.7\n")
    AlexNet(input_shape=(28, 28, 1), classes=2, variant="mini", width=0.25).save(run / "best.keras")
    assert trained_class_names(run / "best.keras", 2) == ("a", "b")
    assert trained_class_names(run / "best.keras", 3) is None  # not the model's classes
    assert main(["predict", str(data / "a" / "0.png"), "--model", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert "Note" not in captured.err
    assert {p["class_name"] for p in json.loads(captured.out)[0]["predictions"]} == {"a", "b"}
    (run / "config.json").write_text(
        json.dumps({**config.to_dict(), "image_folder": str(tmp_path / "gone")})
    )
    assert trained_class_names(run / "best.keras", 2) is None  # the data is not at hand
