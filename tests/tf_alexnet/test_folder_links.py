"""Broken links in image folders: a link named `x.png` whose target is gone was left out of
training and of `predict FOLDER` without a word (`Path.is_file` is false for it)."""

import numpy as np
import tensorflow as tf

from tf_alexnet.cli import main
from tf_alexnet.sources import image_files


def _folder(root):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


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
