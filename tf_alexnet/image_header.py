"""Image checks before any decoding, in plain Python: format from the magic bytes, size from
the header. The serving facade checks every upload with them; `tf-alexnet predict` checks the
size of the files it reads."""

from __future__ import annotations

import re
import struct

from tf_alexnet import contract

PNG_MAX_SIDE = 1_000_000
"""libpng's default limit on a PNG's width and height, which TensorFlow's decoder keeps: a
wider PNG fails to decode, and was answered as corrupt."""


class ImageError(ValueError):
    """An upload that is not an acceptable image; the message is shown to the client."""


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header of a PNG, JPEG, GIF, BMP or WebP file (for
    a GIF, its first frame's: see `_gif_first_frame`)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG header")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(GIF_SIGNATURES):
        width, height, _ = _gif_first_frame(data)
        return "gif", width, height
    if data.startswith(b"BM"):
        if len(data) < 26:
            raise ImageError("truncated BMP header")
        if data[14:18] == b"\x0c\x00\x00\x00":  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack("<HH", data[18:22])
        else:  # BITMAPINFOHEADER and its successors (V4, V5): 32-bit, negative when top-down
            width, height = struct.unpack("<ii", data[18:26])
        return "bmp", abs(width), abs(height)
    if data.startswith(b"\xff\xd8"):
        return ("jpeg", *_jpeg_size(data))
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ("webp", *_webp_size(data))
    raise ImageError(f"unsupported format: expected {contract.IMAGE_FORMATS}")


GIF_SIGNATURES = (b"GIF87a", b"GIF89a")


def _gif_first_frame(data: bytes) -> tuple[int, int, int]:
    """The first frame's width and height, from its image descriptor, and where its image data
    ends (0 when the file ends first).

    TensorFlow ignores the logical screen's size and the frames' offsets: it decodes each
    frame at the largest frame's width and height, and every frame although the model takes
    the first. The facade passes on the first frame alone (see `check_image`).
    """
    if len(data) < 13:
        raise ImageError("truncated GIF header")
    index = 13 + _gif_color_table(data[10])
    size: tuple[int, int] | None = None  # the first frame's, from its descriptor
    in_blocks = False  # in a chain of data blocks: each a length byte, then data; 0 ends it
    # Encoders write blocks of 255 bytes. A 10 MB file of 1-byte blocks took 0.5 s to walk,
    # block by block: the walk gives up past about two blocks per 255 bytes.
    for _ in range(1_000 + len(data) // 128):
        if index >= len(data):
            break
        if in_blocks:
            if data[index] == 0 and size is not None:
                return *size, index + 1
            in_blocks = data[index] != 0
            index += data[index] + 1
        elif data[index] == 0x21:  # an extension: its label, then data blocks
            index, in_blocks = index + 2, True
        elif data[index] == 0x2C and index + 10 <= len(data):  # the first image descriptor
            width, height = struct.unpack("<HH", data[index + 5 : index + 9])
            size = width, height
            # Then a local color table, the LZW code size, and the data blocks.
            index, in_blocks = index + 11 + _gif_color_table(data[index + 9]), True
        else:
            break
    else:
        raise ImageError("GIF of too many small data blocks (encoders write 255-byte blocks)")
    if size is None:
        raise ImageError("GIF without an image")
    return *size, 0  # its data cut short: the decoder says how


def _gif_color_table(flags: int) -> int:
    """The size of the color table that a GIF's screen or image descriptor announces."""
    return 3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas size from the first chunk of the WebP container: VP8X (extended), VP8L
    (lossless) or "VP8 " (lossy key frame). Transparency and animation are refused here, as
    the model's decoder refuses them (see `tf_alexnet.preprocess.decode`)."""
    if len(data) < 30:
        raise ImageError("truncated WebP header")
    chunk = data[12:16]
    if chunk == b"VP8X":  # flags, then 24-bit width and height, each minus one
        if data[20] & 0x02:
            raise ImageError("animated WebP is not supported")
        if data[20] & 0x10:
            raise ImageError("WebP with transparency is not supported")
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:  # 14-bit width and height - 1, then alpha_is_used
        bits = int.from_bytes(data[21:25], "little")
        if bits >> 28 & 1:
            raise ImageError("WebP with transparency is not supported")
        return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # after the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF  # the top 2 bits are the scaling
    raise ImageError("corrupt WebP header")


JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
"""A marker's last 0xFF byte (any marker may be preceded by 0xFF fill bytes, ITU T.81 B.1.1.2)
and its code (0xFF 0x00 is a 0xFF byte of data)."""


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The frame size from the first SOFn segment. Like libjpeg, which TensorFlow decodes
    with, it skips bytes that are not a marker between segments (libjpeg warns "Corrupt JPEG
    data: 3 extraneous bytes before marker 0xdb" and decodes the image)."""
    index = 2
    # Files have tens of segments before the frame header; a 10 MB file of 2.6 million empty
    # comments took 1.5 s to walk, segment by segment, on the event loop.
    for _ in range(1_000):
        if (found := JPEG_MARKER.search(data, index)) is None:
            break
        index, marker = found.start(), found[0][1]
        if index + 9 >= len(data):
            break
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + length
    else:
        raise ImageError("JPEG of over 1,000 segments before its frame header")
    raise ImageError("truncated JPEG header")


LOCAL_MAX_PIXELS = 200_000_000
"""The most pixels `tf-alexnet predict` decodes of one file (as large as the largest camera
sensors'): decoding and resizing take about 25 bytes a pixel, and a 97 KB PNG of 10000x10000
took 2.5 GB; a 1.5 MB one of 40000x40000 would take about 40 GB."""


def _over_the_limit(width: int, height: int, max_pixels: int) -> str | None:
    """What is wrong with an image of `width` x `height` pixels under `max_pixels`; None if
    nothing is."""
    if width * height <= max_pixels:
        return None
    return f"image of {width}x{height} pixels is over the limit of {max_pixels:,} pixels"


def too_many_pixels(data: bytes, max_pixels: int) -> str | None:
    """ "image of WxH pixels is over the limit of N pixels" when the header says so (the words
    `check_image` raises); None when it does not, or cannot be read (the decoder says what is
    wrong with such a file)."""
    try:
        _, width, height = image_size(data)
    except ImageError:
        return None
    return _over_the_limit(width, height, max_pixels)


def check_image(data: bytes, max_pixels: int) -> bytes:
    """The image to decode: `data`, or a GIF's first frame alone (cut after its data, then the
    trailer): 250 frames of 2000x2000 in a 1 MB GIF took 6 s and 1 GB to decode whole, 0.1 s
    and 65 MB cut. Raises ImageError for empty, unknown, zero-sized or too large images, and
    for an 8-bit colour-palette BMP, which the model reads as gray (a model exported before it
    refused one would answer; one since refuses it, but in words the facade turned into "could
    not be decoded", whatever the backend)."""
    if not data:
        raise ImageError("empty file")
    end = 0  # where a GIF's first frame ends
    if data.startswith(GIF_SIGNATURES):
        kind, (width, height, end) = "gif", _gif_first_frame(data)
    else:
        kind, width, height = image_size(data)
    if width == 0 or height == 0:
        raise ImageError(f"{kind.upper()} image of size {width}x{height}")
    if too_large := _over_the_limit(width, height, max_pixels):
        raise ImageError(too_large)
    if kind == "bmp" and contract.palette_bmp_header(data):  # decodes, but as gray
        raise ImageError(contract.PALETTE_BMP)
    if kind == "png" and max(width, height) > PNG_MAX_SIDE:
        raise ImageError(
            f"PNG image of {width}x{height} pixels: TensorFlow's PNG decoder (libpng) reads "
            f"sides of at most {PNG_MAX_SIDE:,} pixels"
        )
    return data[:end] + b";" if end else data  # then the GIF trailer
