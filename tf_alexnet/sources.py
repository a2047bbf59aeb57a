"""Sources: a TFDS dataset or an image folder, as examples at their own resolution.

Each yields `(uint8 image [h, w, c], int label)`, with a test split when it has one.
`tf_alexnet.data` splits them and feeds them through the pipelines.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import os
import pathlib
import re
import socket
import unicodedata
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_alexnet import contract
from tf_alexnet.contract import BMP_HEAD, PALETTE_BMP
from tf_alexnet.errors import UserError
from tf_alexnet.preprocess import decode
from tf_alexnet.specs import DataSpec  # declared there (no TensorFlow), used here


@dataclasses.dataclass(frozen=True)
class Source:
    """Examples at source resolution, before splitting off validation."""

    train: tf.data.Dataset
    num_train: int
    test: tf.data.Dataset | None
    num_test: int
    class_names: tuple[str, ...]
    files: tuple[str, ...] = ()
    """An image folder's files (to name the unreadable ones); none for TFDS datasets."""
    skipped: tuple[str, ...] = ()
    """What an image folder's class folders hold that is not read: files not of an image type,
    and linked folders that lead back into the dataset (ending in a separator, see
    `image_files`)."""
    labels: tuple[int, ...] = ()
    """An image folder's label of each `train` example, in order (to tell which classes each
    split holds); none for TFDS datasets, whose labels are not read ahead."""
    test_labels: tuple[int, ...] = ()
    """The same for `test`."""


def skipped_notice(skipped: Sequence[str]) -> str | None:
    """One line telling which files of an image folder were left out, by suffix, and which
    linked folders (`image_files`'s entries ending in a separator), or None."""
    links = [p for p in skipped if p.endswith(os.sep)]
    files = [p for p in skipped if not p.endswith(os.sep)]
    parts = []
    if files:
        suffixes = collections.Counter(pathlib.Path(p).suffix.lower() or "no suffix" for p in files)
        counts = ", ".join(f"{n} {suffix}" for suffix, n in suffixes.most_common())
        parts.append(
            f"Skipped {len(files):,} file(s) that are not {contract.IMAGE_FORMATS} images "
            f"({counts}), e.g. {files[0]!r}."
        )
    if links:
        parts.append(
            f"Skipped {len(links):,} linked folder(s) that lead back into the image folder (to "
            "it, above it, or to another class's or split's images, which would be read again "
            f"under the wrong class), e.g. {links[0].rstrip(os.sep)!r}."
        )
    return " ".join(parts) or None


IMAGE_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
}
"""The first bytes of each format TensorFlow decodes (WebP: `RIFF....WEBP`, see `image_format`)."""


def image_format(data: bytes) -> str | None:
    """The format that `data`'s first bytes announce ("PNG", "WebP", ...), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next(
        (name for name, signatures in IMAGE_SIGNATURES.items() if data.startswith(signatures)),
        None,
    )


def palette_bmp(encoded: Any) -> tf.Tensor:
    """Whether encoded image bytes (a scalar string) are an 8-bit BMP whose palette is not the
    gray ramp (colour i = gray level i), as a boolean tensor (eager or in a graph).

    TensorFlow's BMP decoder does not look at the palette: it returns an 8-bit BMP's indices as
    gray levels, right only for a gray-ramp palette (what Pillow writes for a gray image). A
    paint program's 256-colour bitmap came out as a gray image of other levels, without an
    error, in training, `predict` and served models alike.
    """
    raw = tf.io.decode_raw(tf.strings.substr(encoded, 0, BMP_HEAD), tf.uint8)
    raw = tf.cast(tf.pad(raw, [[0, BMP_HEAD - tf.shape(raw)[0]]]), tf.int64)

    def number(offset: int, size: int) -> tf.Tensor:  # little-endian
        return tf.add_n([raw[offset + i] * 256**i for i in range(size)])

    info = number(14, 4)  # 12: an OS/2 header, which has no palette of this layout
    used = number(46, 4)
    colours = tf.where((used == 0) | (used > 256), tf.constant(256, tf.int64), used)
    start = 14 + tf.clip_by_value(info, 0, 124)
    table = tf.reshape(tf.gather(raw, start + tf.range(256 * 4, dtype=tf.int64)), [256, 4])
    index = tf.range(256, dtype=tf.int64)
    gray = tf.reduce_all((table[:, :3] == index[:, None]) | (index >= colours)[:, None])
    return (
        (raw[0] == ord("B"))
        & (raw[1] == ord("M"))
        & (info >= 40)
        & (number(28, 2) == 8)
        & tf.logical_not(gray)
    )


def decode_checked(encoded: Any, channels: int) -> tf.Tensor:
    """`decode`, with an 8-bit colour-palette BMP (`palette_bmp`) refused as an
    InvalidArgumentError rather than read as gray."""
    check = tf.debugging.Assert(
        tf.logical_not(palette_bmp(encoded)), [f"The image is {PALETTE_BMP}."]
    )
    with tf.control_dependencies([check]):
        return decode(encoded, channels)


def webp_refused(data: bytes) -> bool:
    """Whether `data` is a WebP that its header marks as transparent or animated, which
    TensorFlow refuses (see `preprocess.decode`). Any WebP that failed used to be called so,
    a truncated download included."""
    if image_format(data) != "WebP":
        return False
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: flags byte, alpha 0x10, animation 0x02
        return len(data) > 20 and bool(data[20] & 0x12)
    if chunk == b"VP8L":  # lossless: signature, 14-bit width and height, then alpha_is_used
        return len(data) >= 25 and bool(int.from_bytes(data[21:25], "little") >> 28 & 1)
    return False


def _bmp_depth_refused(data: bytes) -> str | None:
    """For a BMP of a depth TensorFlow does not decode (1, 4 or 16 bits), which it refused
    as "Number of channels inherent in the image must be 1, 3 or 4, was 0", the reason in
    words (it completes "the file is ..."), else None."""
    if image_format(data) != "BMP" or len(data) < 30 or int.from_bytes(data[14:18], "little") < 40:
        return None
    bits = int.from_bytes(data[28:30], "little")
    if bits in (8, 24, 32):
        return None
    return (
        f"a {bits}-bit BMP, which TensorFlow does not decode (it reads 24- and 32-bit BMPs and "
        "8-bit gray ones): save it as PNG"
    )


def palette_problem(data: bytes) -> str | None:
    """`PALETTE_BMP` for an 8-bit colour-palette BMP, which decodes, but as gray; else None.
    `palette_bmp`'s test read in plain Python (`contract.palette_bmp_header`): 7 us for a BMP
    where its ~15 eager ops took 3.7 ms."""
    return PALETTE_BMP if contract.palette_bmp_header(data) else None


def image_problem(data: bytes) -> str | None:
    """Why encoded `data` is not an image the models read, or None if it decodes.

    The reason completes "the file is ...": "an empty file", "not a JPEG, PNG, GIF, BMP or WebP
    image", or, for a file of a known format that does not decode (a truncated or corrupt
    download), "a PNG file that could not be decoded (Invalid PNG data, size 100)".
    """
    if not data:
        return "an empty file"
    if palette := palette_problem(data):
        return palette
    try:
        decode(data, 3)  # the models' own decoder: what passes here, they read
    except (tf.errors.OpError, ValueError) as err:
        found = image_format(data)
        if found is None:
            return f"not a {contract.IMAGE_FORMATS} image"
        if webp_refused(data):
            return "a WebP image with transparency or animation, which TensorFlow does not decode"
        if depth := _bmp_depth_refused(data):
            return depth
        reason = _reason(err) if isinstance(err, tf.errors.OpError) else str(err)
        return f"a {found} file that could not be decoded ({reason})"
    return None


def unreadable_images(files: Sequence[str]) -> list[str]:
    """`path (reason)` for each file that does not decode, the reason as `image_problem`
    gives it. Slow (it decodes every file): for naming the culprits once a pipeline has
    failed."""
    found = []
    for path in files:
        try:
            problem = image_problem(pathlib.Path(path).read_bytes())
        except OSError as err:  # gone or locked since it was listed
            problem = err.strerror or type(err).__name__
        if problem:
            found.append(f"{path} ({problem})")
    return found


def in_colour(files: Sequence[str], count: int = 16) -> bool:
    """Whether an image folder's images have colour: any of `count` files spread over the list
    (so over the classes) whose channels differ by more than 2 levels on average (lossy
    codecs leave gray images 1 level apart). Unreadable files are passed over.

    Decoded as the models decode them (`decode`, 3 channels; gray ones replicated): asked for
    the file's own channels, TensorFlow corrupted the heap on an animated WebP, and `train`
    of a folder holding one died of a segmentation fault before it could name the file."""
    step = max(1, len(files) // count)
    for path in files[::step][:count]:
        try:
            rgb = tf.cast(decode(pathlib.Path(path).read_bytes(), 3), tf.float32)
        except (OSError, tf.errors.OpError):
            continue
        spread = tf.reduce_mean(tf.abs(rgb - tf.reduce_mean(rgb, axis=-1, keepdims=True)))
        if float(spread) > 2.0:
            return True
    return False


def _reason(err: tf.errors.OpError) -> str:
    """TensorFlow's message without its op decorations: "Invalid PNG data, size 100"."""
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:.*", "", err.message.strip().splitlines()[0])
    return message.strip() or type(err).__name__


def _builder_problem(tfds: Any, name: str, err: Exception) -> str:
    """TFDS's reason a builder could not be made, without its preamble, with the dataset's
    configs when the config was the problem (TFDS's own list comes after its message)."""
    reason = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "[^"]*": ', "", str(err))
    reason = reason.split(" Here are ")[0].strip().rstrip(".")
    try:
        configs = [
            config.name for config in tfds.builder_cls(re.split(r"[/:]", name)[0]).BUILDER_CONFIGS
        ]
    except Exception:  # the list is a courtesy; the reason stands without it
        configs = []
    if configs and "BuilderConfig" in reason:
        more = f", ... ({len(configs)} in all)" if len(configs) > 8 else ""
        reason += f"; its configs: {', '.join(configs[:8])}{more}"
    return reason + "."


def load_source(spec: DataSpec) -> Source:
    """Opens the configured source (an image folder, else a TFDS dataset)."""
    if spec.image_folder:
        return folder_source(spec.image_folder)
    return tfds_source(spec.dataset, spec.data_dir, spec.manual_dir)


def class_names_at_hand(spec: DataSpec) -> tuple[str, ...] | None:
    """The class names of the data `spec` names when that data is at hand (an image folder
    that exists, a prepared TFDS dataset), else None: nothing is downloaded or prepared."""
    if spec.image_folder:
        try:
            return _folder_classes(pathlib.Path(spec.image_folder))[1]
        except UserError:
            return None
    import tensorflow_datasets as tfds

    data_dir = spec.data_dir or os.environ.get(contract.ENV_DATA_DIR) or None
    try:
        builder = tfds.builder(spec.dataset, data_dir=data_dir)
        return _label_names(builder, spec.dataset) if builder.is_prepared() else None
    except Exception:  # TFDS raises many types; the caller names the classes by default
        return None


def tfds_source(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> Source:
    """A TFDS image-classification dataset, prepared offline from `manual_dir` if given."""
    import tensorflow_datasets as tfds  # slow import, only when TFDS is the source

    data_dir = data_dir or os.environ.get(contract.ENV_DATA_DIR) or None
    manual_dir = manual_dir or os.environ.get(contract.ENV_MANUAL_DIR) or None
    if manual_dir and not os.path.isdir(manual_dir):
        what = "is not a folder" if os.path.exists(manual_dir) else "does not exist"
        raise UserError(f"The manual-download folder {manual_dir!r} {what}.")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise UserError(f"Unknown TFDS dataset {name!r}.") from err
    except (ValueError, AssertionError) as err:  # TFDS's words for a config or version it lacks
        raise UserError(f"TFDS dataset {name!r}: {_builder_problem(tfds, name, err)}") from err
    image_key, label_key = _supervised_keys(builder, name)
    hint = (
        f" Put the original files in a folder and pass --manual-dir or set "
        f"${contract.ENV_MANUAL_DIR}."
    )
    if not builder.is_prepared():
        # Offline, TFDS retries each download for minutes (3.5 for Fashion-MNIST) before it
        # gives up, a manual folder that lacks a file included: say it now.
        urls = builder.url_infos or {}
        missing = _not_in_manual_dir(urls, manual_dir)
        unresolved = _unresolved_hosts(urls) if missing else []
        if unresolved and manual_dir:
            raise UserError(
                f"The manual-download folder {manual_dir!r} lacks {', '.join(missing)} of TFDS "
                f"dataset {name!r}, and its download host(s) {', '.join(unresolved)} cannot be "
                "resolved (no internet?). Put the original files there."
            )
        if unresolved:
            raise UserError(
                f"Could not prepare TFDS dataset {name!r}: its download host(s) "
                f"{', '.join(unresolved)} cannot be resolved (no internet?).{hint}"
            )
    try:
        if not builder.is_prepared():
            with _preparing_alone(builder.data_dir, name):
                # Another process may have prepared it meanwhile: a new builder reads it.
                builder = tfds.builder(name, data_dir=data_dir)
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
                )
    except Exception as err:  # TFDS raises many types: network, checksums, missing files
        raise UserError(
            f"Could not prepare TFDS dataset {name!r}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}.{'' if manual_dir else hint}"
        ) from err
    splits = builder.info.splits
    if "train" not in splits:
        raise UserError(f"TFDS dataset {name!r} has no 'train' split: {sorted(splits)}.")

    def read(split: str) -> tf.data.Dataset:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))

    has_test = "test" in splits
    return Source(
        train=read("train"),
        num_train=splits["train"].num_examples,
        test=read("test") if has_test else None,
        num_test=splits["test"].num_examples if has_test else 0,
        class_names=_label_names(builder, name),
    )


@contextlib.contextmanager
def _preparing_alone(dataset_dir: str, name: str) -> Iterator[None]:
    """Holds a lock beside `dataset_dir` (a TFDS dataset version's folder) while one process
    prepares it. Two processes preparing one dataset at once (the workers of a multi-worker
    run, on an empty data folder) both wrote it, and the second to finish failed: "Cannot
    rename .../incomplete.ZB1GNC_3.0.1. Destination .../3.0.1 already exists". A folder that
    is not local (`gs://...`) is not locked."""
    folder = os.path.dirname(dataset_dir)
    if "://" in folder:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".tf_alexnet-prepare.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process preparing TFDS dataset {name!r}...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # the lock goes with the file when it is closed (or the process dies)


PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def _not_in_manual_dir(url_infos: Any, manual_dir: str | None) -> list[str]:
    """The files of `url_infos` (TFDS's url -> UrlInfo) that TFDS would download: every one
    without `manual_dir`, else those not in it (TFDS looks there for each by its file name)."""
    names = [
        getattr(info, "filename", None) or str(url).rsplit("/", 1)[-1]
        for url, info in url_infos.items()
    ]
    if not manual_dir:
        return names
    return [name for name in names if not os.path.isfile(os.path.join(manual_dir, name))]


def _unresolved_hosts(urls: Any) -> list[str]:
    """The hosts of `urls` that no name server knows (none behind a proxy, which resolves
    names itself)."""
    if any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return []
    hosts = sorted({urllib.parse.urlsplit(str(url)).hostname or "" for url in urls} - {""})
    unresolved = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, None)
        except OSError:
            unresolved.append(host)
    return unresolved


def _label_names(builder: Any, name: str) -> tuple[str, ...]:
    """A TFDS image-classification dataset's class names."""
    _, label_key = _supervised_keys(builder, name)
    return tuple(builder.info.features[label_key].names)


def _supervised_keys(builder: Any, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    keys = builder.info.supervised_keys
    features = builder.info.features
    if (
        not keys
        or len(keys) != 2
        or not isinstance(features[keys[0]], tfds.features.Image)
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
        or features[keys[0]].shape[-1] not in (1, 3)
    ):
        raise UserError(
            f"TFDS dataset {name!r} is not an image-classification dataset "
            f"(expected supervised keys (image, label) with 1 or 3 channels; got {keys!r})."
        )
    return keys[0], keys[1]


def folder_source(root: str | os.PathLike[str], channels: int = 3) -> Source:
    """Images in `root/<class>/` (or `root/train/<class>/` and `root/test/<class>/`).

    Images are decoded to `channels` (1 or 3) at their own size; class names are the
    sorted subfolder names. As in Keras's `image_dataset_from_directory`, a class folder's
    subfolders are read too. Hidden files and folders (`.ipynb_checkpoints/`, macOS's
    `._name.png` companions, which are not images) are skipped.

    Refused in one line: a class folder without images (it would be a class never seen), and
    `train/` without `test/` (or the reverse). Printed as a note: folders beside `train/` and
    `test/` (a `val/`), and images outside the class folders, which are not read.
    """
    root = pathlib.Path(root)
    train_root, class_names, has_test, subfolders = _folder_classes(root)
    for folder in (train_root, root / "test") if has_test else (train_root,):
        if shared := _shared_class_folders(folder):
            raise UserError(shared)
    notes = _unread_notes(root, train_root, sorted(subfolders - {"train", "test"}), has_test)
    skipped: list[str] = []

    def listing(folder: pathlib.Path) -> tuple[list[str], list[int]]:
        paths, labels = [], []
        for label, name in enumerate(class_names):
            files, others = image_files(folder / name, root)
            skipped.extend(others)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise UserError(
                f"No images ({', '.join(contract.IMAGE_SUFFIXES)}) under {str(folder)!r}."
                + (f" {skipped_notice(skipped)}" if skipped else "")
            )
        return paths, labels

    def read(paths: list[str], labels: list[int]) -> tf.data.Dataset:
        # As the file system's bytes: a name that is not UTF-8 (a Latin-1 `caf\xe9.png` from an
        # old archive) is held in `str` with surrogates, which a string tensor refuses.
        names = np.array([os.fsencode(path) for path in paths], dtype=object)
        ds = tf.data.Dataset.from_tensor_slices((names, np.array(labels, np.int32)))
        return ds.map(
            lambda path, label: (decode_checked(tf.io.read_file(path), channels), label),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,  # the splits pick images by position (data.py)
        )

    if has_test:
        unknown = sorted(set(_class_folders(root / "test")) - {*class_names})
        if unknown:
            raise UserError(
                f"{str(root / 'test')!r} has class folders that {str(train_root)!r} has not: "
                f"{', '.join(map(repr, unknown))}. The model could never predict them."
            )
    train_paths, train_labels = listing(train_root)
    empty = [name for label, name in enumerate(class_names) if label not in set(train_labels)]
    if empty:
        raise UserError(
            f"The class folder(s) {', '.join(map(repr, empty))} in {str(train_root)!r} hold no "
            f"{contract.IMAGE_FORMATS} images: every class folder is a class. Add images or "
            "remove the folder(s)."
        )
    test_paths, test_labels = listing(root / "test") if has_test else ([], [])
    for note in notes:
        print(f"Note: {note}", flush=True)
    return Source(
        train=read(train_paths, train_labels),
        num_train=len(train_paths),
        test=read(test_paths, test_labels) if has_test else None,
        num_test=len(test_paths),
        class_names=class_names,
        files=(*train_paths, *test_paths),
        skipped=tuple(skipped),
        labels=tuple(train_labels),
        test_labels=tuple(test_labels),
    )


SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation"})
"""Subfolder names that mark a train/test layout rather than classes."""


def _unread_notes(
    root: pathlib.Path, train_root: pathlib.Path, others: list[str], has_test: bool
) -> list[str]:
    """One line for each part of an image folder that is not read: the folders beside train/
    and test/ (a `val/`: the validation split comes out of train/), and images outside the
    class folders."""
    notes = []
    if has_test and others:
        shown = ", ".join(repr(str(root / name)) for name in others)
        notes.append(
            f"{shown} {'is' if len(others) == 1 else 'are'} not read: with train/ and test/, the "
            "validation split comes out of train/ (--validation-fraction)."
        )
    for folder in dict.fromkeys([root, train_root, *([root / "test"] if has_test else [])]):
        loose = sorted(
            p
            for p in folder.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.suffix.lower() in contract.IMAGE_SUFFIXES
        )
        if loose:
            notes.append(
                f"{len(loose)} image(s) directly in {str(folder)!r} are not read, e.g. "
                f"{str(loose[0])!r}: images go in a subfolder per class."
            )
    return notes


def image_files(
    folder: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> tuple[list[str], list[str]]:
    """The image files under `folder`, at any depth and sorted, and what else it holds.

    Hidden files and folders (`.ipynb_checkpoints/`, macOS's `._name.png`) are left out of both.
    Linked folders are followed (each real folder read once), except those to a folder within
    `folder`, which is read under its own path (its images were named after the link when the
    walk met the link first), and those that lead back into the dataset folder `root` (default:
    `folder`) from outside `folder`: to `root` or a folder above it, or into another class's
    folder or split (whose images would be read again, under this class). Those are listed
    with the other files, each with a trailing separator (`skipped_notice` names them). A
    folder that cannot be read is a `UserError`.
    """
    found, links = _files_under(pathlib.Path(folder), pathlib.Path(root or folder))
    images = [str(p) for p in found if p.suffix.lower() in contract.IMAGE_SUFFIXES]
    others = [str(p) for p in found if p.suffix.lower() not in contract.IMAGE_SUFFIXES]
    return images, sorted(others + [str(link) + os.sep for link in links])


def _files_under(
    folder: pathlib.Path, dataset: pathlib.Path
) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """`folder`'s files at any depth, through linked folders (`Path.rglob` skips them before
    Python 3.13: a class folder's linked subfolder was left out without a word) and broken
    links (reading names them), sorted, and the linked folders not followed because they lead
    back into `dataset` (see `image_files`).
    """
    files, links, seen = [], [], set()
    own, top = os.path.realpath(folder), os.path.realpath(dataset)

    def inside(path: str, parent: str) -> bool:
        return os.path.commonpath([path, parent]) == parent

    def walked(path: str) -> bool:  # a folder within `folder` that the walk reads as it is
        return inside(path, own) and not any(
            part.startswith(".") for part in pathlib.PurePath(os.path.relpath(path, own)).parts
        )

    def refuse(err: OSError) -> None:  # os.walk passes these over: "holds no images"
        raise UserError(_unreadable(err, folder))

    for root, folders, names in os.walk(folder, onerror=refuse, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        kept = []
        for name in folders:
            if name.startswith("."):
                continue
            path = pathlib.Path(root, name)
            target = os.path.realpath(path)
            if path.is_symlink():
                if walked(target):
                    continue
                if not inside(target, own) and (inside(top, target) or inside(target, top)):
                    links.append(path)  # back into the dataset, from outside `folder`
                    continue
            kept.append(name)
        folders[:] = kept
        files += [pathlib.Path(root, name) for name in names if not name.startswith(".")]
    try:
        # A broken link stays, to be named when it is read (it was left out without a word);
        # other entries that are not files (a FIFO, a socket) would block or fail the reading.
        listed = [path for path in files if path.is_file() or not path.exists()]
        return sorted(listed), sorted(links)
    except OSError as err:  # a folder listed but not searchable (r without x)
        raise UserError(_unreadable(err, folder)) from err


def _unreadable(err: OSError, folder: pathlib.Path) -> str:
    """One line for a folder of an image folder that cannot be listed (permissions)."""
    path = err.filename if err.filename is not None else str(folder)
    return (
        f"{err.strerror or type(err).__name__}: {os.fspath(path)!r}. The image folder's folders "
        "must be readable to list the images."
    )


def _shared_class_folders(folder: pathlib.Path) -> str | None:
    """One line for two class folders of `folder` of which one is the other, or inside it,
    through a linked folder (their images would be read under both classes), or None."""
    names = sorted(_class_folders(folder))
    real = {name: os.path.realpath(folder / name) for name in names}
    inside = os.path.realpath(folder) + os.sep
    links = {name for name in names if real[name] != inside + name}  # only links can share
    for name in names:
        for other in names if name in links else sorted(links):
            if other != name and os.path.commonpath([real[name], real[other]]) == real[other]:
                linked = name if (folder / name).is_symlink() else other
                return (
                    f"The class folders {name!r} and {other!r} in {str(folder)!r} hold the same "
                    f"images: {linked!r} is a link to {real[linked]!r}, so they would be read "
                    "under both classes. Remove the link, or give the class its own images."
                )
    return None


def _folder_classes(root: pathlib.Path) -> tuple[pathlib.Path, tuple[str, ...], bool, set[str]]:
    """An image folder's layout: the folder of its training classes, their sorted names,
    whether it has `train/` and `test/`, and its subfolders. A layout that cannot be trained
    on is refused in one line (see `folder_source`)."""
    try:
        is_dir, exists = root.is_dir(), root.exists()
    except OSError as err:  # a folder above it cannot be searched
        raise UserError(_unreadable(err, root)) from err
    if not is_dir:
        what = "is a file, not a folder" if exists else "does not exist"
        raise UserError(f"The image folder {str(root)!r} {what}.")
    subfolders = set(_class_folders(root))
    has_test = {"train", "test"} <= subfolders
    if not has_test and subfolders & {"train", "test"} and subfolders <= SPLIT_FOLDERS:
        (found,) = subfolders & {"train", "test"}
        missing = "test" if found == "train" else "train"
        raise UserError(
            f"The image folder {str(root)!r} has {found}/ but no {missing}/: the train/test "
            f"layout needs both (DIR/train/<class>/ and DIR/test/<class>/). For a folder of "
            f"classes with a seeded test split, pass --image-folder {str(root / found)!r}."
        )
    train_root = root / "train" if has_test else root
    class_names = tuple(sorted(_class_folders(train_root)))
    if not class_names:
        raise UserError(f"The image folder {str(train_root)!r} has no class subfolders.")
    for name in class_names:
        if problem := _name_problem(name):
            raise UserError(
                f"The class folder {name!r} in {str(train_root)!r} has {problem} in its name: "
                "class names are written one a line beside an exported model. Rename the folder."
            )
    if len(class_names) == 1:  # it trained, to a "100% accuracy" that means nothing
        raise UserError(
            f"The image folder {str(train_root)!r} has one class subfolder "
            f"({class_names[0]!r}): a classifier needs two or more."
        )
    return train_root, class_names, has_test, subfolders


def _class_folders(folder: pathlib.Path) -> list[str]:
    """The names of `folder`'s subfolders, hidden ones left out."""
    try:
        return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError as err:
        raise UserError(_unreadable(err, folder)) from err


def _name_problem(name: str) -> str | None:
    """What in a class folder's name would break the one-name-a-line `class_names.txt` (a
    character that `str.splitlines` splits on, another control character, or a byte that is
    not UTF-8), or None."""
    for char in name:
        category = unicodedata.category(char)
        if category == "Cs":  # os.fsdecode's stand-in for an undecodable byte
            return "a byte that is not UTF-8"
        if category in ("Cc", "Zl", "Zp") or char.splitlines() != [char]:
            return "a line break or another control character"
    return None


def sample_images(spec: DataSpec, count: int = 8) -> list[bytes]:
    """The first `count` test images of the source (train if it has no test split), as PNG."""
    source = load_source(spec)
    examples = (source.test if source.test is not None else source.train).take(count)
    with reading_images(source.files):  # `export`'s samples: a bad one was a traceback
        return [tf.io.encode_png(image).numpy() for image, _ in examples]


READ_ERRORS = (
    tf.errors.InvalidArgumentError,  # a file that does not decode
    tf.errors.NotFoundError,  # deleted since it was listed
    tf.errors.PermissionDeniedError,
)


@contextlib.contextmanager
def reading_images(files: Sequence[str]) -> Iterator[None]:
    """Turns a decoding failure of a pipeline over an image folder's `files` into one line
    naming the unreadable images (TensorFlow's own error names no file)."""
    try:
        yield
    except READ_ERRORS as err:
        unreadable = unreadable_images(files)
        if not unreadable:
            raise
        shown = ", ".join(unreadable[:5]) + (", ..." if len(unreadable) > 5 else "")
        raise UserError(
            f"{len(unreadable)} of the {len(files):,} images cannot be read: {shown}. "
            "Remove or replace them, then run the command again."
        ) from err
