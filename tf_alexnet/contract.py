"""Shared facts of tf_alexnet: names, classes, sizes, signature and tensor keys.

Pure Python on purpose (no TensorFlow import): training, export and the serving
facade all read these values, and the facade must be able to import them cheaply.
"""

from __future__ import annotations

MODEL_NAME = "alexnet"
"""Default Keras model name and TF Serving model name."""

DATASET = "fashion_mnist"
"""Default TFDS dataset."""

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names, index = label id."""

NUM_CLASSES = len(CLASS_NAMES)

IMAGE_SIZE = 224
"""The chapter's input size: Fashion-MNIST's 28x28 images are resized to 224x224."""

CHANNELS = 1
"""Fashion-MNIST is grayscale."""

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
"""The chapter's model input, `(height, width, channels)`: the builder's default."""

INPUT_RANGE = (0.0, 1.0)
"""Pixel range the models expect: images are scaled to [0, 1] before the first layer."""

VARIANTS = ("d2l", "paper", "mini")
"""`d2l`: the chapter's network; `paper`: the 2012 paper's; `mini`: a small CPU variant."""

MAX_WIDTH = 4.0
"""The widest `width` the builder takes. Parameters grow with the square of the width: at 4.0,
`d2l` has 747,490,058 (16 times its 46,764,746 at 224x224x1; 3 GB of float32 weights, about
9 GB to train with SGD momentum) and `paper` 925,743,592 at 227x227x3 and 1000 classes, already
more than a CPU trains. At 8.0 they would be 3.0 and 3.7 billion (12 GB of weights before any
training), and a width of 100 (a percentage given for a multiplier) would be 467 billion: such
widths end in an out-of-memory error deep in TensorFlow, so they are refused up front."""

IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
"""The encoded image formats read everywhere (TensorFlow's `decode_image`; GIF: first frame)."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp")
"""The file suffixes an image folder is read by (any case; `.jpe` and `.jfif`: JPEG, as some
browsers and Windows save them)."""

PALETTE_BMP = (
    "an 8-bit BMP with a colour palette, which TensorFlow reads as gray (its palette indices, "
    "not its colours): save it as PNG"
)
"""Why an 8-bit colour-palette BMP is refused (it completes "the file is ..."): in the graph by
training and exports (`tf_alexnet.sources.palette_bmp`), before decoding by `predict` and the
serving facade (`palette_bmp_header`)."""
BMP_HEAD = 14 + 124 + 256 * 4
"""A BMP's bytes up to the end of the largest palette: file header, info header (V5 at most)
and 256 colours of 4 bytes."""


def palette_bmp_header(data: bytes) -> bool:
    """Whether `data` is an 8-bit BMP whose palette is not the gray ramp (colour i = gray
    level i), read from its first `BMP_HEAD` bytes: `tf_alexnet.sources.palette_bmp`'s test
    in plain Python, for `predict` and the serving facade, which imports no TensorFlow
    (microseconds for a BMP, one comparison for other formats)."""
    if not data.startswith(b"BM"):
        return False
    head = data[:BMP_HEAD].ljust(BMP_HEAD, b"\0")  # as palette_bmp: missing bytes read as 0
    info = int.from_bytes(head[14:18], "little")  # 12: an OS/2 header, no such palette
    if info < 40 or int.from_bytes(head[28:30], "little") != 8:
        return False
    used = int.from_bytes(head[46:50], "little")
    colours = 256 if used == 0 or used > 256 else used
    table = head[14 + min(info, 124) :][: 4 * colours]  # blue, green, red, reserved
    ramp = bytes(range(colours))
    return not (table[0::4] == table[1::4] == table[2::4] == ramp)


# --- SavedModel signatures (used by export and serving) -----------------------------------
SIGNATURE_IMAGE_BYTES = "serving_default"
"""Signature taking a batch of encoded images (see IMAGE_FORMATS)."""
SIGNATURE_IMAGE_TENSOR = "serving_pixels"
"""Signature taking float pixels already at the model's input size, in INPUT_RANGE."""

INPUT_IMAGE_BYTES = "image_bytes"
INPUT_IMAGE_TENSOR = "images"

OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASS_ID = "class_id"
OUTPUT_CLASS_NAME = "class_name"
OUTPUT_TOP_K_IDS = "top_k_ids"
OUTPUT_TOP_K_SCORES = "top_k_scores"
TOP_K = 5

CLASS_NAMES_ASSET = "class_names.txt"
MAX_VERSION = 2**63 - 1
"""The highest export version: TF Serving reads version folders as int64 (and ignores others)."""

# --- A run directory's files (written by training, read by export, predict and --config) ---
RUN_CONFIG = "config.json"
"""The settings a run started with (every setting there was then)."""
RUN_CLASSES = "classes.json"
"""The run's class names, written when training starts."""
RUN_HISTORY = "history.csv"
"""One row per finished epoch."""
RUN_METRICS = "metrics.json"
"""A finished run's results (with its class names)."""
RUN_BEST_MODEL = "best.keras"
RUN_FINAL_MODEL = "final.keras"

# --- Environment variables ----------------------------------------------------------------
ENV_DATA_DIR = "TF_ALEXNET_DATA_DIR"
"""Where TFDS keeps prepared datasets (default: TFDS's own, ~/tensorflow_datasets)."""
ENV_MANUAL_DIR = "TF_ALEXNET_MANUAL_DIR"
"""Folder holding a dataset's original files, so TFDS builds it offline."""


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Fashion-MNIST's names for 10 classes, else `class_0`, `class_1`, ..."""
    if num_classes == NUM_CLASSES:
        return CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))


ENV_PROGRESS_SECONDS = "TF_ALEXNET_PROGRESS_SECONDS"
"""Seconds between progress lines when output is not a terminal (default 30)."""
