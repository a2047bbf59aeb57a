"""The facade refuses only what the served model's own decoder refuses (or what is over a limit).

A corpus of real-world encodings, made here with Pillow and by hand, goes both to the exported
model's `serving_default` signature (TensorFlow's `decode_image` inside the graph) and to the
facade: accepted images must be answered, refused ones must get a 400 that names the file.
"""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tf_alexnet_serving import Settings, create_app

from tests.conftest import flat_png
from tf_alexnet import contract
from tf_alexnet.image_header import ImageError, check_image, image_size


def _picture(mode, size=(37, 23)):
    """A deterministic test picture (a gradient with a square) in `mode`."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    gray = ((x * 7 + y * 5) % 256).astype(np.uint8)
    gray[5:15, 5:15] = 255
    rgb = np.stack([gray, 255 - gray, (gray // 2).astype(np.uint8)], axis=-1)
    return Image.fromarray(rgb, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(rgb)


def _save(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _with_jpeg_fill_bytes(data, count=3):
    """The same JPEG with `count` 0xFF fill bytes before every marker up to the scan."""
    out, index = bytearray(data[:2]), 2
    while index < len(data):
        marker = data[index + 1]
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        out += b"\xff" * count + data[index : index + 2 + length]
        index += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return bytes(out + data[index:])
    raise AssertionError("no scan")


def _with_junk_after_app0(data, junk):
    """The same JPEG with `junk` between its APP0 segment and the next marker."""
    assert data[2:4] == b"\xff\xe0"  # Pillow's JFIF APP0 segment
    end = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:end] + junk + data[end:]


def _png_chunk(kind, payload):
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _interlaced_png(pixels):
    """An Adam7-interlaced 8-bit grayscale PNG (Pillow writes none)."""
    height, width = pixels.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes.append((0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _bmp(header_size, width=6, height=4, bpp=24, top_down=False):
    """A BMP with a DIB header of `header_size` bytes (12: OS/2 core; 40, 108, 124: Windows)."""
    row = bytes(range(width * bpp // 8))
    row += b"\x00" * (-len(row) % 4)
    pixels = row * height
    offset = 14 + header_size
    if header_size == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bpp)
    else:
        dib = struct.pack(
            "<IiiHHIIiiII", header_size, width, -height if top_down else height, 1, bpp, 0,
            len(pixels), 2835, 2835, 0, 0,
        )  # fmt: skip
        dib += b"\x00" * (header_size - len(dib))
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + pixels


def _with_square(image, x):
    """`image` with a small square painted at (x, 2): an animation's next frame."""
    image = image.copy()
    image.paste(7, (x, 2, x + 4, 6))
    return image


def _gif(*frames, canvas=None):
    """A GIF of `frames`, each (width, height) or (width, height, left, top): Pillow's one-frame
    GIFs spliced together, each frame with its own palette as a local color table. The logical
    screen is `canvas`, or the first frame's size."""
    out = b""
    for width, height, *offset in frames:
        one = _save(_picture("P", (width, height)), "GIF")
        start = 13 + 3 * 2 ** ((one[10] & 7) + 1)  # after the global color table
        assert one[start] == 0x2C  # the image descriptor
        left, top = offset or (0, 0)
        descriptor = b"," + struct.pack("<HHHHB", left, top, width, height, 0x80 | one[10] & 7)
        out += descriptor + one[13:start] + one[start + 10 : -1]
    screen = struct.pack("<HHBBB", *(canvas or frames[0][:2]), 0, 0, 0)
    return b"GIF89a" + screen + out + b";"


def _corpus():
    rgb, gray = _picture("RGB"), _picture("L")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    baseline = _save(rgb, "JPEG", quality=90)
    frames = [_picture("P"), _picture("P").rotate(90), _picture("P").rotate(180)]
    translucent = _picture("RGBA")
    translucent.putalpha(128)  # an opaque alpha channel would be dropped by the WebP encoder
    corpus = {
        "baseline.jpg": baseline,
        "progressive.jpg": _save(rgb, "JPEG", progressive=True),
        "restart-markers.jpg": _save(rgb, "JPEG", restart_marker_blocks=1),
        "restart-rows.jpg": _save(rgb, "JPEG", restart_marker_rows=1),
        "fill-bytes.jpg": _with_jpeg_fill_bytes(baseline),
        "fill-bytes-progressive.jpg": _with_jpeg_fill_bytes(_save(rgb, "JPEG", progressive=True)),
        "junk-before-a-marker.jpg": _with_junk_after_app0(baseline, b"abc"),
        "junk-and-fill-bytes.jpg": _with_junk_after_app0(baseline, b"ab\xff\x00c\xff\xff"),
        "exif-orientation.jpg": _save(rgb, "JPEG", exif=exif.tobytes()),
        "grayscale.jpg": _save(gray, "JPEG"),
        "cmyk.jpg": _save(_picture("CMYK"), "JPEG"),
        "subsampling-444.jpg": _save(rgb, "JPEG", subsampling=0),
        "optimized.jpg": _save(rgb, "JPEG", optimize=True, quality=100),
        "comment-and-icc.jpg": _save(rgb, "JPEG", comment=b"hello", icc_profile=b"\x00" * 200),
        "truncated.jpg": baseline[: len(baseline) // 2],
        "1-bit.png": _save(_picture("1"), "PNG"),
        "2-bit-palette.png": _save(_picture("P"), "PNG", bits=2),
        "4-bit-palette.png": _save(_picture("P"), "PNG", bits=4),
        "8-bit.png": _save(gray, "PNG"),
        "16-bit.png": _save(_picture("I").point(lambda v: v * 256).convert("I;16"), "PNG"),
        "palette.png": _save(_picture("P"), "PNG"),
        "palette-transparency.png": _save(_picture("P"), "PNG", transparency=0),
        "interlaced.png": _interlaced_png(np.asarray(gray)),
        "rgba.png": _save(_picture("RGBA"), "PNG"),
        "gray-alpha.png": _save(_picture("LA"), "PNG"),
        "bad-crc.png": _save(gray, "PNG")[:-5] + b"\x00" * 5,
        "truncated.png": _save(gray, "PNG")[:50],
        "static.gif": _save(_picture("P"), "GIF"),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "transparent.gif": _save(_picture("P"), "GIF", transparency=0),
        "frame-larger-than-screen.gif": _gif((37, 23), canvas=(1, 1)),
        "frame-outside-screen.gif": _gif((37, 23, 500, 400), canvas=(40, 30)),
        "first-frame-smaller.gif": _gif((10, 10), (37, 23)),
        "animated-delta.gif": _save(
            frames[0],
            "GIF",
            save_all=True,
            append_images=[_with_square(frames[0], x) for x in (3, 9)],
        ),
        "pillow-24-bit.bmp": _save(rgb, "BMP"),
        "pillow-8-bit.bmp": _save(gray, "BMP"),
        "pillow-1-bit.bmp": _save(_picture("1"), "BMP"),
        "core-header.bmp": _bmp(12),
        "info-header.bmp": _bmp(40),
        "info-header-top-down.bmp": _bmp(40, top_down=True),
        "info-header-32-bit.bmp": _bmp(40, bpp=32),
        "v4-header.bmp": _bmp(108),
        "v5-header.bmp": _bmp(124),
        "v5-header-32-bit-top-down.bmp": _bmp(124, bpp=32, top_down=True),
        "lossy.webp": _save(rgb, "WEBP", quality=80),
        "lossless.webp": _save(rgb, "WEBP", lossless=True),
        "lossless-alpha.webp": _save(translucent, "WEBP", lossless=True),
        "alpha.webp": _save(translucent, "WEBP"),
        "gray.webp": _save(gray, "WEBP"),
        "truncated.webp": _save(rgb, "WEBP")[:60],
        "animated.webp": _save(rgb, "WEBP", save_all=True, append_images=[gray.convert("RGB")]),
    }
    return corpus


CORPUS = _corpus()


@pytest.fixture(scope="module")
def served_model(model_base):
    import tensorflow as tf

    from tf_alexnet import contract
    from tf_alexnet.export import saved_model_path

    signature = tf.saved_model.load(str(saved_model_path(model_base / "alexnet"))).signatures[
        contract.SIGNATURE_IMAGE_BYTES
    ]

    def accepts(data):
        try:
            signature(**{contract.INPUT_IMAGE_BYTES: tf.constant([data])})
        except tf.errors.InvalidArgumentError:
            return False
        return True

    return accepts


@pytest.fixture(scope="module")
def client(model_base):
    with TestClient(create_app(Settings(model_base_path=str(model_base)))) as client:
        yield client


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_facade_agrees_with_the_models_decoder(client, served_model, name):
    data = CORPUS[name]
    response = client.post("/predict", files={"file": (name, data, "application/octet-stream")})
    if served_model(data):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["file"] == name
    else:
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith(f"{name}: ")


def test_a_bmp_variant_tensorflow_does_not_read_is_not_called_corrupt(client):
    """Every decoding failure was "corrupt or truncated image", a valid 1-bit BMP too."""
    response = client.post("/predict", files={"file": ("1-bit.bmp", CORPUS["pillow-1-bit.bmp"])})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "1-bit.bmp: could not be decoded: corrupt, truncated, or a variant TensorFlow's decoder "
        "does not read (such as 1-bit BMP)"
    )


COLOUR_BMP = _save(Image.new("RGB", (30, 30), (200, 10, 10)).convert("P"), "BMP")
GRAY_BMP = _save(Image.new("L", (30, 30), 77), "BMP")  # a gray-ramp palette: read right


def _palette_answers(client, data):
    """The answers to `data` as a multipart file, the whole body and a JSON b64 instance."""
    encoded = base64.b64encode(data).decode()
    return {
        "pal.bmp": client.post("/predict", files={"file": ("pal.bmp", data, "image/bmp")}),
        "body": client.post("/predict", content=data, headers={"Content-Type": "image/bmp"}),
        "instances[0]": client.post("/predict", json={"instances": [{"b64": encoded}]}),
    }


def test_a_colour_palette_bmp_is_named_whatever_the_body(client):
    """The model reads an 8-bit colour-palette BMP's indices as gray (a recent export refuses
    it): `tf-alexnet predict` named it, the facade answered "could not be decoded"."""
    for name, response in _palette_answers(client, COLOUR_BMP).items():
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == f"{name}: {contract.PALETTE_BMP}"
    for name, response in _palette_answers(client, GRAY_BMP).items():
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["file"] == name


def test_the_facade_tells_palette_bmps_as_the_models_decoder_does():
    """`contract.palette_bmp_header` (the facade's, no TensorFlow) and `sources.palette_bmp`
    (the exported model's and `predict`'s) agree, on BMPs of every depth and cut ones."""
    from tf_alexnet.sources import palette_bmp

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8))
    cases = [COLOUR_BMP, GRAY_BMP, COLOUR_BMP[:100], GRAY_BMP[:300], b"BM", b""]
    cases += [_save(noise.convert(mode), "BMP") for mode in ("P", "L", "RGB", "RGBA", "1")]
    cases.append(_save(noise.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "BMP"))
    cases += [data for name, data in CORPUS.items() if name.endswith(".bmp")]
    found = [contract.palette_bmp_header(data) for data in cases]
    assert found == [bool(palette_bmp(data)) for data in cases]
    assert found[:2] == [True, False]


def test_the_usual_encodings_are_all_accepted(served_model):
    """The corpus is not trivially refused: the model decodes every common encoding, and
    refuses only broken files and the BMPs TensorFlow does not read (1-bit, OS/2 headers)."""
    refused = {name for name, data in CORPUS.items() if not served_model(data)}
    assert refused == {
        "truncated.jpg", "truncated.png", "bad-crc.png", "pillow-1-bit.bmp", "core-header.bmp",
        "truncated.webp", "alpha.webp", "lossless-alpha.webp", "animated.webp",
    }  # fmt: skip


def test_jpeg_fill_bytes_before_markers_are_read():
    data = _with_jpeg_fill_bytes(_save(_picture("RGB"), "JPEG"), count=7)
    assert check_image(data, 10_000) == data


def test_a_jpeg_of_a_million_segments_is_refused_quickly():
    """Files have tens of segments before the frame header: 10 MB of empty comments took 1.5 s
    to walk, segment by segment, on the event loop."""
    import time

    frame = b"\xff\xc0\x00\x11\x08\x00\x17\x00\x25\x03" + b"\x00" * 9
    data = b"\xff\xd8" + b"\xff\xfe\x00\x02" * 2_600_000 + frame
    start = time.perf_counter()
    with pytest.raises(ImageError, match="JPEG of over 1,000 segments before its frame header"):
        check_image(data, 25_000_000)
    assert time.perf_counter() - start < 0.5
    with_comments = b"\xff\xd8" + b"\xff\xfe\x00\x02" * 990 + frame
    assert image_size(with_comments) == ("jpeg", 37, 23)


def test_jpeg_junk_before_a_marker_is_skipped_as_libjpeg_skips_it():
    """libjpeg skips bytes other than a marker between two segments, with a warning, and
    TensorFlow decodes the image: the header check read them as a corrupt header."""
    for name in ("junk-before-a-marker.jpg", "junk-and-fill-bytes.jpg"):
        assert image_size(CORPUS[name]) == ("jpeg", 37, 23), name


def _decode(data):
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


@pytest.mark.parametrize(
    ("frames", "canvas", "size"),
    [
        ([(100, 80)], (1, 1), (100, 80)),  # a frame larger than the screen
        ([(100, 80, 50, 40)], None, (100, 80)),  # partly outside the screen: clipped, not grown
        ([(10, 10, 500, 400)], (300, 300), (10, 10)),  # wholly outside: black
        ([(100, 80), (10, 10, 5, 5)], None, (100, 80)),  # the first frame, passed on alone
        ([(10, 10), (100, 80)], None, (10, 10)),  # (whole, TensorFlow would give 100x80)
    ],
)
def test_gif_size_is_the_size_tensorflow_decodes_of_what_the_facade_passes_on(frames, canvas, size):
    """TensorFlow ignores a GIF's logical screen and its frames' offsets: it decodes each frame
    at the largest frame width by the largest frame height. A 1x1 screen around a 10,000 x
    10,000 frame slipped past MAX_PIXELS (2.5 GB of memory for one request)."""
    data = _gif(*frames, canvas=canvas)
    assert _decode(check_image(data, size[0] * size[1])).shape == (size[1], size[0], 3)
    assert image_size(data) == ("gif", *size)
    with pytest.raises(ImageError, match=f"{size[0]}x{size[1]} pixels is over the limit"):
        check_image(data, size[0] * size[1] - 1)


@pytest.mark.parametrize("name", [name for name in CORPUS if name.endswith(".gif")])
def test_a_gif_is_passed_on_as_its_first_frame_alone(name):
    """TensorFlow decodes every frame of a GIF although the model takes the first (a 1 MB GIF
    of 250 frames of 2000x2000: 6 s and 1 GB): the facade passes on the first frame alone,
    which decodes to the same pixels (unless a later frame is larger than the first)."""
    data = CORPUS[name]
    passed_on = check_image(data, 1_000_000)
    assert Image.open(io.BytesIO(passed_on)).n_frames == 1
    whole, first = _decode(data), _decode(passed_on)
    if name == "first-frame-smaller.gif":  # whole, TensorFlow pads it to the largest frame
        assert first.shape == (10, 10, 3) and whole.shape == (23, 37, 3)
        whole = whole[:10, :10]
    np.testing.assert_array_equal(first, whole)


def test_the_backend_gets_the_first_frame_of_a_gif_of_many(client, served_model):
    """The cut is made before the backend: TF Serving decodes one frame too."""
    data = _gif(*[(400, 300)] * 200)
    assert served_model(data)
    backend, received = client.app.state.backend, []
    predict = backend.predict

    async def recording(image):
        received.append(image)
        return await predict(image)

    backend.predict = recording
    try:
        response = client.post("/predict", files={"file": ("many.gif", data, "image/gif")})
    finally:
        del backend.predict  # the method again
    assert response.status_code == 200, response.text
    (image,) = received
    assert Image.open(io.BytesIO(image)).n_frames == 1 and len(image) < len(data) / 100


def test_a_gif_of_tiny_data_blocks_is_refused_quickly():
    """Encoders write GIF data in blocks of 255 bytes: a 10 MB file of 1-byte blocks took 0.5 s
    to walk, block by block, on the event loop."""
    import time

    frame = b"," + struct.pack("<HHHHB", 0, 0, 2000, 2000, 0) + b"\x08"
    data = b"GIF89a" + struct.pack("<HHBBB", 2000, 2000, 0, 0, 0) + frame + b"\x01\x00" * 5_000_000
    start = time.perf_counter()
    with pytest.raises(ImageError, match="GIF of too many small data blocks"):
        check_image(data, 25_000_000)
    assert time.perf_counter() - start < 0.5
    assert check_image(_gif((37, 23)), 10_000)  # 255-byte blocks, as written


@pytest.mark.parametrize(
    ("name", "chunk", "answer"),
    [
        ("lossy.webp", b"VP8 ", ("webp", 37, 23)),
        ("lossless.webp", b"VP8L", ("webp", 37, 23)),
        ("gray.webp", b"VP8 ", ("webp", 37, 23)),
        ("alpha.webp", b"VP8X", "WebP with transparency is not supported"),
        ("lossless-alpha.webp", b"VP8L", "WebP with transparency is not supported"),
        ("animated.webp", b"VP8X", "animated WebP is not supported"),
    ],
)
def test_webp_headers_give_the_size_or_what_the_model_refuses(name, chunk, answer):
    """Each kind of WebP header: the size, or the reason the model's decoder would refuse."""
    assert CORPUS[name][12:16] == chunk
    if isinstance(answer, tuple):
        assert image_size(CORPUS[name]) == answer
    else:
        with pytest.raises(ImageError, match=answer):
            image_size(CORPUS[name])


@pytest.mark.parametrize(("width", "height"), [(1_000_001, 1), (1, 25_000_000)])
def test_a_png_too_wide_for_the_decoder_is_said_so(width, height):
    """A valid 25,000,000x1 PNG (within MAX_PIXELS) was answered "could not be decoded:
    corrupt, truncated, ...": libpng, in TensorFlow, refuses sides over 1,000,000."""
    with pytest.raises(ImageError, match=f"PNG image of {width}x{height} pixels: TensorFlow's"):
        check_image(flat_png(width, height), 25_000_000)
    side = flat_png(1_000_000, 1)  # the widest it reads
    assert _decode(check_image(side, 25_000_000)).shape == (1, 1_000_000, 3)
