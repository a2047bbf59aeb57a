"""An animated WebP in an image folder trained with gray inputs (the presets' `channels = 1`):
`train`'s colour check decoded it at the file's own channels, where TensorFlow 2.21 corrupts
the heap, and the process died (segmentation fault or abort, no message) instead of naming the
file. Run in a child process, so that a crash fails this test rather than the whole run."""

import io
import subprocess
import sys

import numpy as np
from PIL import Image

CHILD = """
import sys
from tf_alexnet.cli import main
from tf_alexnet.sources import in_colour

anim, png = sys.argv[1], sys.argv[2]
print("colour", [in_colour([anim, png] * 8) for _ in range(5)], flush=True)
train = ["train", "--preset", "quick", "--image-folder", sys.argv[3], "--epochs", "1"]
print("rc", main([*train, "--batch-size", "4", "--run-dir", sys.argv[4]]), flush=True)
"""


def test_an_animated_webp_is_named_not_a_crash(tmp_path):
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(5):
            gray = np.full((12, 12, 3), 40 * i + 20, np.uint8)
            Image.fromarray(gray).save(data / name / f"{i}.png")
    anim = data / "a" / "moving.webp"
    buffer = io.BytesIO()
    Image.new("RGB", (7, 5), (200, 0, 0)).save(
        buffer, "WEBP", save_all=True, append_images=[Image.new("RGB", (7, 5), (0, 0, 200))]
    )
    anim.write_bytes(buffer.getvalue())
    arguments = [str(anim), str(data / "a" / "0.png"), str(data), str(tmp_path / "run")]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    # Not decoded (TensorFlow refuses it at 3 channels): passed over, the gray PNG has no colour.
    assert "colour [False, False, False, False, False]\n" in child.stdout
    assert "rc 2\n" in child.stdout
    errors = [line for line in child.stderr.splitlines() if line.startswith("tf-alexnet")]
    assert errors == [
        f"tf-alexnet: error: 1 of the 11 images cannot be read: {anim} (a WebP image with "
        "transparency or animation, which TensorFlow does not decode). Remove or replace them, "
        "then run the command again."
    ]


def test_a_truncated_webp_is_not_called_transparent_or_animated(tmp_path):
    """Every WebP that failed to decode was "a WebP image with transparency or animation",
    a half-downloaded photo included; the header tells those apart."""
    from tf_alexnet.sources import image_problem, unreadable_images

    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 4), dtype=np.uint8)

    def webp(mode, **options):
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGBA").convert(mode).save(buffer, "WEBP", **options)
        return buffer.getvalue()

    for lossless in (False, True):
        whole = webp("RGB", lossless=lossless)
        assert image_problem(whole) is None
        cut = tmp_path / f"cut-{lossless}.webp"
        cut.write_bytes(whole[: len(whole) // 2])
        assert image_problem(cut.read_bytes()) == (
            "a WebP file that could not be decoded (Failed to decode WebP image.)"
        )
        assert unreadable_images([str(cut)]) == [
            f"{cut} (a WebP file that could not be decoded (Failed to decode WebP image.))"
        ]
        refused = webp("RGBA", lossless=lossless)
        assert image_problem(refused) == (
            "a WebP image with transparency or animation, which TensorFlow does not decode"
        )
