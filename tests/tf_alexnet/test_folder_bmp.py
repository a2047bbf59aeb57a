"""BMP files in image folders and for `predict`: TensorFlow's decoder returns an 8-bit BMP's
palette indices as gray levels, so a 256-colour bitmap (what paint programs save) was read as
a gray image of other levels, without a word, by training, `predict` and served models."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_alexnet import contract
from tf_alexnet.cli import main
from tf_alexnet.exported import ExportedModel
from tf_alexnet.preprocess import decode


def _pixels():
    pixels = np.zeros((6, 8, 3), np.uint8)
    pixels[:, :4] = (200, 30, 30)
    pixels[:, 4:] = (30, 60, 220)
    return pixels


def _bmp(mode, pixels=None):
    buffer = io.BytesIO()
    Image.fromarray(_pixels() if pixels is None else pixels).convert(mode).save(buffer, "BMP")
    return buffer.getvalue()


def test_palette_bmp_is_told_from_the_bmps_tensorflow_reads_right():
    from tf_alexnet.sources import image_problem, palette_bmp

    colour, gray = _bmp("P"), _bmp("L")
    # The defect itself: TensorFlow reads the colour palette's indices as gray levels.
    assert decode(colour, 3).numpy()[0, 0].tolist() != [200, 30, 30]
    assert bool(palette_bmp(colour))
    assert "8-bit BMP with a colour palette" in image_problem(colour)
    # A gray-ramp palette (Pillow's gray BMP), 24- and 32-bit BMPs and other formats decode right.
    assert decode(gray, 3).numpy()[0, 0].tolist() == [int(_bmp_gray_level())] * 3
    for data in (gray, _bmp("RGB"), _bmp("RGBA"), tf.io.encode_png(_pixels()).numpy(), b"BM"):
        assert not bool(palette_bmp(data))
    assert image_problem(gray) is None and image_problem(_bmp("RGB")) is None
    # In a graph too (the pipelines' map), over bytes of any length.
    check = tf.function(palette_bmp, input_signature=[tf.TensorSpec([], tf.string)])
    assert bool(check(tf.constant(colour))) and not bool(check(tf.constant(b"")))


def _bmp_gray_level():
    return np.asarray(Image.fromarray(_pixels()).convert("L"))[0, 0]


def test_palette_bmp_in_an_image_folder_is_named_not_read_as_gray(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            (data / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
        (data / name / "gray.bmp").write_bytes(_bmp("L"))  # read right: kept
    train = ["train", "--preset", "quick", "--image-folder", str(data), "--epochs", "1"]
    train += ["--batch-size", "4", "--channels", "3"]
    assert main([*train, "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    painted = data / "b" / "painted.bmp"
    painted.write_bytes(_bmp("P"))
    assert main([*train, "--run-dir", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of the 11 images cannot be read: " in err
    assert f"{painted} (an 8-bit BMP with a colour palette" in err

    # predict names it too, and still answers for the others.
    predict = ["predict", str(painted), str(data / "a" / "0.png")]
    assert main([*predict, "--model", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert f"{data / 'a' / '0.png'}\n" in out and str(painted) not in out
    assert err == (
        f"tf-alexnet: error: {painted}: an 8-bit BMP with a colour palette, which TensorFlow "
        "reads as gray (its palette indices, not its colours): save it as PNG\n"
    )

    # A served model refuses it (TF Serving: 400) rather than answering for a gray image.
    base = tmp_path / "models"
    assert main(["export", str(tmp_path / "run"), "--model-base-path", str(base)]) == 0
    served = ExportedModel.find(base / contract.MODEL_NAME).signature(
        contract.SIGNATURE_IMAGE_BYTES
    )
    gray_bmp = (data / "a" / "gray.bmp").read_bytes()
    answer = served(**{contract.INPUT_IMAGE_BYTES: tf.constant([gray_bmp])})
    assert answer[contract.OUTPUT_PROBABILITIES].shape == (1, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="8-bit BMP with a colour palette"):
        served(**{contract.INPUT_IMAGE_BYTES: tf.constant([gray_bmp, _bmp("P")])})


def test_a_bmp_of_a_depth_tensorflow_refuses_is_told_in_words(tmp_path):
    """A 1-bit BMP (a scanner's black and white) was refused as "Number of channels inherent
    in the image must be 1, 3 or 4, was 0"."""
    from tf_alexnet.sources import image_problem, unreadable_images

    reason = (
        "a 1-bit BMP, which TensorFlow does not decode (it reads 24- and 32-bit BMPs and 8-bit "
        "gray ones): save it as PNG"
    )
    assert image_problem(_bmp("1")) == reason
    scan = tmp_path / "scan.bmp"
    scan.write_bytes(_bmp("1"))
    assert unreadable_images([str(scan)]) == [f"{scan} ({reason})"]
    truncated = tmp_path / "cut.bmp"
    truncated.write_bytes(_bmp("RGB")[:100])  # a depth it reads: TensorFlow's reason stays
    assert unreadable_images([str(truncated)])[0].startswith(
        f"{truncated} (a BMP file that could not be decoded (Input size should"
    )


def test_the_palette_check_before_decoding_runs_no_tensorflow_ops(tmp_path, monkeypatch):
    """`image_problem` (what `predict` checks each image with) ran the in-graph palette check,
    ~15 eager ops (3.7 ms per BMP); the header read in plain Python says the same in 7 us."""
    from tf_alexnet import sources

    def in_graph(data):
        raise AssertionError("the in-graph palette check ran")

    monkeypatch.setattr(sources, "palette_bmp", in_graph)
    png, jpeg = tf.io.encode_png(_pixels()).numpy(), tf.io.encode_jpeg(_pixels()).numpy()
    assert sources.image_problem(png) is None and sources.image_problem(jpeg) is None
    assert sources.image_problem(_bmp("L")) is None  # a gray ramp: read right
    assert sources.image_problem(_bmp("P")) == contract.PALETTE_BMP


def test_unreadable_images_give_image_problems_reasons(tmp_path):
    """`unreadable_images` (naming the files once a pipeline failed) ran its own copy of
    `image_problem`'s checks and worded them otherwise ("WebP with transparency or
    animation", TensorFlow's "Unknown image file format...")."""
    from tf_alexnet.sources import image_problem, unreadable_images

    cases = {
        "palette.bmp": _bmp("P"),
        "scan.bmp": _bmp("1"),
        "cut.png": tf.io.encode_png(_pixels()).numpy()[:40],
        "notes.png": b"not an image",
        "empty.jpg": b"",
        "fine.png": tf.io.encode_png(_pixels()).numpy(),
    }
    paths = []
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    named = zip(paths[:-1], list(cases.values())[:-1], strict=True)
    expected = [f"{path} ({image_problem(data)})" for path, data in named]
    assert unreadable_images([*paths, str(tmp_path / "gone.png")]) == [
        *expected,
        f"{tmp_path / 'gone.png'} (No such file or directory)",
    ]
    assert image_problem(cases["fine.png"]) is None
    assert "could not be decoded" in expected[2] and "not a JPEG, PNG" in expected[3]
