"""Broken links in image folders: a link named `x.png` whose target is gone was left out of
training and of `predict FOLDER` without a word (`Path.is_file` is false for it)."""

from tests.conftest import write_image_folder
from tf_alexnet.cli import main
from tf_alexnet.sources import image_files


def _folder(root):
    return write_image_folder(root, {"": 4})


def test_a_broken_link_is_named_not_left_out(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    train += ["--batch-size", "4"]
    assert main([*train, "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()

    gone = data / "b" / "gone.png"
    gone.symlink_to(tmp_path / "moved-away.png")
    notes = data / "b" / "notes.txt"
    notes.symlink_to(tmp_path / "moved-away.txt")
    images, others = image_files(data / "b")
    assert str(gone) in images and others == [str(notes)]

    assert main([*train, "--run-dir", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of the 9 images cannot be read: " in err
    assert f"{gone} (No such file or directory)" in err

    assert main(["predict", str(data / "b"), "--model", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert out.count(str(data / "b")) == 4 and str(gone) not in out
    assert f"tf-alexnet: error: {gone}: No such file or directory\n" in err
