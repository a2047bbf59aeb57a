"""`export` reads a few of the data's test images as its validation samples and warmup
requests; one that does not decode came out as TensorFlow's traceback (an InvalidArgumentError
naming no file), where `train` and `evaluate` name the file in one line."""

from tests.conftest import write_image_folder
from tf_alexnet.cli import main


def test_an_unreadable_sample_image_is_named_in_one_line(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", {"train": 4, "test": 1})
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    assert main([*train, "--batch-size", "2", "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    broken = data / "test" / "a" / "0.png"
    broken.write_text("not an image")
    export = ["export", str(tmp_path / "run"), "--model-base-path", str(tmp_path / "models")]
    assert main(export) == 2
    assert capsys.readouterr().err == (
        f"tf-alexnet: error: 1 of the 10 images cannot be read: {broken} (not a JPEG, PNG, GIF, "
        "BMP or WebP image). Remove or replace them, "
        "then run the command again.\n"
    )
    assert not (tmp_path / "models").exists()
