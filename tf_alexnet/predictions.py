"""What goes into a model and what comes out, in the spirit of `keras.applications`.

- `preprocess_input`: images -> what every tf_alexnet model takes: float32 pixels in [0, 1]
  (`contract.INPUT_RANGE`), at the model's height, width and channels (default 224x224x1).
- `decode_predictions`: a batch of scores (probabilities, or logits with `from_logits=True`)
  -> the top classes per image as `(class_id, class_name, score)`, best first.

numpy only at import: the serving facade decodes scores without TensorFlow. `preprocess_input`
resizes with TensorFlow (as training and the exported signatures do) and imports it when called.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tf_alexnet import contract
from tf_alexnet.errors import UserError

Top = list[tuple[int, str, float]]
"""One image's answer: `(class_id, class_name, score)`, best first."""

PROBABILITY_TOLERANCE = 1e-3
"""How far above 1 a probability may be (float rounding) before the scores are taken for logits."""

AS_UINT8 = " (pass 0-255 pixels as uint8: `tf.cast(images, tf.uint8)`, `images.astype('uint8')`)"
"""How to pass 0-255 pixels held as floats, as `keras.utils.image_dataset_from_directory` and
`keras.utils.img_to_array` give them: said where float pixels above 1 are refused."""


def as_numpy(values: Any) -> np.ndarray:
    """Any Keras backend's tensor as a numpy array, without importing the backend: a PyTorch
    tensor that is part of a graph (a model's output) refuses `np.asarray`, and one on a GPU
    must come to the CPU first."""
    if type(values).__module__.startswith("torch"):
        values = values.detach().cpu()
        if str(values.dtype) == "torch.bfloat16":  # numpy has no bfloat16: torch refuses it
            values = values.float()
    return np.asarray(values)


def _refuse_keras_tensor(values: Any, function: str, argument: str) -> None:
    """A ValueError for a symbolic Keras tensor (`keras.Input(...)`, a functional model's
    `model.output`), which holds no values: numpy's own error for it was taken for a ragged
    array's."""
    kind = type(values)
    if kind.__name__ == "KerasTensor" and kind.__module__.startswith("keras"):
        raise ValueError(
            f"`{function}` computes on values (numpy arrays, eager or `tf.data` tensors), and a "
            "symbolic Keras tensor has none: call it on your data before or after the model "
            f"(e.g. in `tf.data.Dataset.map`), or on `model.predict(...)`'s output. "
            f"Received: {argument}={values!r}"
        )


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Softmax over `axis` (numerically stable: the maximum is subtracted first)."""
    logits = as_numpy(logits).astype(np.float64)
    exp = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return np.asarray(exp / exp.sum(axis=axis, keepdims=True))


def to_probabilities(scores: Any, from_logits: bool) -> np.ndarray:
    """`scores` as probabilities: softmax of logits, or the probabilities unchanged."""
    return softmax(scores) if from_logits else as_numpy(scores)


def unnamed_classes(
    model_path: str | os.PathLike[str], class_names: Sequence[str], remedy: str
) -> str:
    """What a model without recorded class names (a `.keras` file copied out of its run
    directory) is given instead, and how to give its own: it was given them without a word."""
    shown = ", ".join(map(repr, class_names[:3])) + (", ..." if len(class_names) > 3 else "")
    whose = "Fashion-MNIST's " if tuple(class_names) == contract.CLASS_NAMES else ""
    return (
        f"{str(model_path)!r} has no class names beside it (no run directory's "
        f"{contract.RUN_METRICS} or {contract.RUN_CLASSES}): its {len(class_names)} classes are "
        f"named with {whose}defaults ({shown}). {remedy}"
    )


def trained_class_names(model_path: str | os.PathLike[str], classes: int) -> tuple[str, ...] | None:
    """The class names a `.keras` model was trained with, from its run beside it (a run's
    best.keras or final.keras): `metrics.json` of a finished run, else `classes.json`, which
    training writes when it starts (a killed run's model has none other), if they are there
    for `classes` classes.

    The one lookup that `predict` and `export` share: a model whose names are known is never
    given Fashion-MNIST's (`contract.default_class_names`) by default.
    """
    folder = pathlib.Path(model_path).parent
    for recorded in (folder / contract.RUN_METRICS, folder / contract.RUN_CLASSES):
        if not recorded.is_file():
            continue
        try:
            names = json.loads(recorded.read_text()).get("class_names")
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
            continue
        if (
            isinstance(names, list)
            and len(names) == classes
            and all(isinstance(n, str) for n in names)
        ):
            return tuple(names)
    return _named_by_the_runs_data(folder, classes)


def _named_by_the_runs_data(folder: pathlib.Path, classes: int) -> tuple[str, ...] | None:
    """The class names of the data a run's `config.json` names, for a run that recorded none
    (one stopped before it finished, by a version from before `classes.json`), when that data
    is at hand."""
    from tf_alexnet.run_dir import RunDir

    run = RunDir(folder)
    if not run.is_run():
        return None
    try:
        config = run.load_config()
    except (UserError, ValueError):
        return None
    from tf_alexnet.sources import class_names_at_hand  # TensorFlow: only for such a run

    names = class_names_at_hand(config.data_spec())
    return names if names is not None and len(names) == classes else None


def decode_predictions(
    preds: Any,
    top: int = contract.TOP_K,
    class_names: Sequence[str] | None = None,
    from_logits: bool = False,
) -> list[Top]:
    """The `top` classes of each image in a batch of scores, best first.

    Args:
        preds: scores of shape `(samples, classes)`: probabilities (in [0, 1]), or logits with
            `from_logits=True`, of any integer or float type (16-bit floats, bfloat16
            included). NaN and infinite scores are refused.
        top: how many classes per image, a positive integer. A `top` above the number of
            classes gives all of them (as `keras.applications` does).
        class_names: a sequence of strings, index = class id (not a mapping); default:
            Fashion-MNIST's for 10 classes, else `class_0`, `class_1`, ...
        from_logits: apply a softmax first (the AlexNet builder's default top ends in logits);
            for 2 or more classes (a softmax over one logit is always 1: pass a sigmoid's
            probabilities instead).

    Returns:
        One list per image of `(class_id, class_name, score)` tuples. Ties go to the lower
        class id, as in the exported signatures' `tf.math.top_k`.
    """
    _refuse_keras_tensor(preds, "decode_predictions", "preds")
    if isinstance(preds, Mapping):  # numpy holds a dict as one object: "preds.shape=()"
        exported = contract.OUTPUT_PROBABILITIES in preds
        hint = f": pass preds[{contract.OUTPUT_PROBABILITIES!r}]" if exported else ""
        raise ValueError(
            "`decode_predictions` expects a batch of scores: a 2D array of shape "
            f"(samples, classes), not a dict of outputs{hint}. "
            f"Received: a dict with keys {sorted(map(str, preds))}"
        )
    try:
        preds = as_numpy(preds)
    except ValueError as err:  # numpy's "inhomogeneous shape": rows of different lengths
        raise ValueError(
            "`decode_predictions` expects a batch of scores: a 2D array of shape "
            "(samples, classes), every row as long. Received: rows of different lengths "
            f"({' '.join(str(err).split())[:200]})"
        ) from None
    if (preds.dtype.kind == "f" and preds.dtype.itemsize < 4) or preds.dtype.name == "bfloat16":
        # float16, and ml_dtypes' bfloat16 (dtype.kind "V"): a model's output under a
        # "bfloat16" or "float16" dtype policy.
        preds = preds.astype(np.float32)
    if preds.ndim != 2 or preds.shape[1] < 1:
        raise ValueError(
            "`decode_predictions` expects a batch of scores: a 2D array of shape "
            f"(samples, classes). Received: preds.shape={preds.shape}"
        )
    if preds.dtype.kind not in "uif":  # bool, strings, objects, complex numbers
        raise ValueError(
            f"`decode_predictions` expects numeric scores. Received: preds.dtype={preds.dtype}"
        )
    if not np.isfinite(preds).all():
        raise ValueError(
            "`decode_predictions` expects finite scores. Received: "
            f"{int(np.isnan(preds).sum())} NaN and {int(np.isinf(preds).sum())} infinite values"
        )
    classes = preds.shape[1]
    if isinstance(class_names, str | bytes):
        raise ValueError(
            "`class_names` should be a sequence of names, one per class, not a single string. "
            f"Received: class_names={class_names!r}"
        )
    if isinstance(class_names, Mapping):
        # `tuple()` of a mapping is its keys: {0: "cat", ...} named every class by its id.
        raise ValueError(
            "`class_names` should be a sequence of names, one per class in class-id order, not "
            "a mapping: pass `[names[i] for i in range(classes)]`. "
            f"Received: class_names of type {type(class_names).__name__}"
        )
    names = tuple(class_names) if class_names is not None else contract.default_class_names(classes)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(
            "`class_names` should be strings, one per class. Received: class_names with "
            f"{sorted({type(name).__name__ for name in names if not isinstance(name, str)})} items"
        )
    names = tuple(str(name) for name in names)  # numpy's str_ as plain str
    if len(names) != classes:
        raise ValueError(
            f"`class_names` should have one name per class ({classes}). "
            f"Received: {len(names)} class names"
        )
    if not _is_integer(top) or top < 1:
        raise ValueError(f"`top` should be a positive integer. Received: top={top!r}")
    if not isinstance(from_logits, bool | np.bool_):  # "no" or "False" would mean True
        raise ValueError(
            f"`from_logits` should be True or False. Received: from_logits={from_logits!r}"
        )
    if from_logits and classes == 1:  # a softmax over one score is 1 whatever the score
        raise ValueError(
            "`from_logits=True` takes a softmax over each row, which is 1.0 for every image "
            "with one class: apply a sigmoid to a single logit (`keras.ops.sigmoid`) and pass "
            f"the probabilities. Received: preds.shape={preds.shape}, from_logits=True"
        )
    low, high = (preds.min(), preds.max()) if preds.size else (0, 0)
    if not from_logits and (low < 0 or high > 1 + PROBABILITY_TOLERANCE):  # not probabilities
        raise ValueError(
            "`decode_predictions` received scores outside [0, 1]: logits, not probabilities (the "
            "AlexNet builder's top ends in logits unless `classifier_activation` is set). Pass "
            f"from_logits=True. Received: preds.min()={low:.4g}, preds.max()={high:.4g}"
        )
    scores = to_probabilities(preds, from_logits)
    # As floats: negated unsigned integers wrap around.
    order = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, : int(top)]
    return [
        [(int(i), names[i], float(row[i])) for i in indices]
        for row, indices in zip(scores, order, strict=True)
    ]


def preprocess_input(
    images: Any,
    input_shape: Sequence[int | None] = contract.INPUT_SHAPE,
) -> np.ndarray:
    """Images -> the models' input: float32 in [0, 1] at `input_shape` (height, width, channels).

    Args:
        images: one image `(height, width, channels)` or a batch of them, with 1 or 3
            channels: integers (uint8, 0-255) are scaled to [0, 1]; floats must be in [0, 1]
            already (NaN is refused). Booleans are refused: convert a 0/1 mask with
            `.astype("float32")`. Any size: images are resized (bilinear, antialiased) as in
            training.
        input_shape: the model's `model.input_shape[1:]` (a tuple, a 1D numpy array or a
            `tf.TensorShape`, as the AlexNet builder takes). A height or width of None (a
            feature extractor built with `include_top=False`) keeps the images' own size on
            that side: only channels and scale change there.

    Returns:
        A float32 batch of shape `(samples, height, width, channels)`: a numpy array, or, given
        a symbolic `tf.Tensor` (in `tf.data`'s `map` or a `tf.function`), a `tf.Tensor`
        whose pixel checks run with the graph. Map it over batched datasets: a single image
        still becomes a batch of one.
    """
    import tensorflow as tf

    from tf_alexnet.preprocess import preprocess

    height, width, channels = _check_input_shape(input_shape)
    if tf.is_tensor(images) and not tf.executing_eagerly():
        return _preprocess_symbolic(images, height, width, channels)  # type: ignore[no-any-return]
    _refuse_keras_tensor(images, "preprocess_input", "images")
    try:
        array = as_numpy(images)
    except ValueError as err:  # numpy's "inhomogeneous shape": a list of images of many sizes
        raise ValueError(
            "`preprocess_input` expects an image or a batch of images of one size: call it "
            "once per image for images of different sizes. Received: images of different "
            f"shapes ({' '.join(str(err).split())[:200]})"
        ) from None
    given = array.shape  # before a batch axis is added
    if array.dtype.name == "bfloat16":  # ml_dtypes' (dtype.kind "V"): a bfloat16 pipeline's
        array = array.astype(np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        # One (28, 28) image, or (N, 28, 28) as `keras.datasets` gives gray images (not a
        # (height, width, 4) RGBA image).
        no_channels_axis = len(given) == 2 or (len(given) == 3 and given[-1] not in (1, 3, 4))
        # A list, or a gray PIL image (`keras.utils.load_img(..., color_mode="grayscale")`),
        # has no shape and takes no `[..., None]` (a TypeError).
        add_axis = (
            "images[..., None]" if hasattr(images, "shape") else "np.asarray(images)[..., None]"
        )
        hint = f" (gray images without a channels axis: pass {add_axis})"
        raise ValueError(
            "`preprocess_input` expects an image (height, width, channels) or a batch of them, "
            f"with 1 or 3 channels{hint if no_channels_axis else ''}. "
            f"Received: images.shape={given}"
        )
    if 0 in array.shape[1:3]:  # TensorFlow's resize fails: "input image must be of non-zero size"
        raise ValueError(
            "`preprocess_input` expects images of at least 1x1 pixels. "
            f"Received: images.shape={given}"
        )
    if array.dtype.kind not in "uif":  # bool, strings, objects, complex numbers
        raise ValueError(
            "`preprocess_input` expects integer (0-255) or float ([0, 1]) pixels; convert a "
            "0/1 boolean mask with `.astype('float32')`. "
            f"Received: images.dtype={array.dtype}"
        )
    if array.dtype.kind == "f":
        if nans := int(np.isnan(array).sum()):
            raise ValueError(
                f"Float pixels should be in [0, 1], and NaN is not. Received: {nans} NaN values"
            )
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if low < contract.INPUT_RANGE[0] or high > contract.INPUT_RANGE[1]:
            raise ValueError(
                f"Float pixels should be in [0, 1]{AS_UINT8}. "
                f"Received: values in [{low:g}, {high:g}]"
            )
    elif array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                "Integer pixels should be in [0, 255]. "
                f"Received: values in [{array.min()}, {array.max()}]"
            )
        array = array.astype(np.uint8)
    size = (height or array.shape[1], width or array.shape[2])
    output = preprocess(tf.constant(array), size, channels)
    return np.asarray(output, np.float32)


def _preprocess_symbolic(images: Any, height: int | None, width: int | None, channels: int) -> Any:
    """`preprocess_input` for a graph tensor (`tf.data.Dataset.map`, `tf.function`): the same
    conversion in TensorFlow ops, the pixel range checked when the graph runs."""
    import tensorflow as tf

    from tf_alexnet.preprocess import preprocess, to_channels

    rank, depth = images.shape.rank, images.shape[-1] if images.shape.rank else None
    if rank not in (3, 4) or depth not in (1, 3):
        raise ValueError(
            "`preprocess_input` expects an image (height, width, channels) or a batch of them, "
            f"with 1 or 3 channels. Received: images.shape={images.shape}"
        )
    dtype = images.dtype
    batch = images if rank == 4 else images[None]
    if dtype.is_floating:
        # (NaN fails too; TensorFlow's message then shows it among the values)
        low, high, expected = 0.0, 1.0, f"Float pixels should be in [0, 1]{AS_UINT8}"
    elif dtype.is_integer:
        low, high, expected = 0, 255, "Integer pixels should be in [0, 255]"
    else:
        raise ValueError(
            "`preprocess_input` expects integer (0-255) or float ([0, 1]) pixels. "
            f"Received: images.dtype={dtype.name}"
        )
    if dtype != tf.uint8:  # a NaN fails both comparisons
        checks = [
            tf.debugging.assert_greater_equal(batch, tf.cast(low, dtype), message=expected),
            tf.debugging.assert_less_equal(batch, tf.cast(high, dtype), message=expected),
        ]
        with tf.control_dependencies(checks):
            batch = tf.identity(batch)
        if dtype.is_integer:
            batch = tf.cast(batch, tf.uint8)
    if height is None and width is None:  # the images' own size
        return tf.image.convert_image_dtype(to_channels(batch, channels), tf.float32)
    size = (height or batch.shape[1], width or batch.shape[2])
    if None in size:
        raise ValueError(
            "`preprocess_input` on a symbolic tensor keeps an image side only if its size is "
            "known: give both height and width, or neither. "
            f"Received: input_shape={(height, width, channels)}, images.shape={images.shape}"
        )
    return preprocess(batch, size, channels)


def _check_input_shape(input_shape: Any) -> tuple[int | None, int | None, int]:
    """`(height, width, channels)` as ints (height and width may be None), or a ValueError."""

    def side(n: Any) -> bool:
        return n is None or (_is_integer(n) and n > 0)

    # As the AlexNet builder takes them: a 1D numpy array, and a `tf.TensorShape` of known
    # rank (`images.shape[1:]`, a dataset's `element_spec.shape[1:]`), as the tuple they hold.
    if isinstance(input_shape, np.ndarray) and input_shape.ndim == 1:
        input_shape = tuple(input_shape.tolist())
    elif callable(getattr(input_shape, "as_list", None)) and not isinstance(input_shape, Sequence):
        with contextlib.suppress(ValueError):  # unknown rank: refused below, as it came
            input_shape = tuple(input_shape.as_list())
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not (side(input_shape[0]) and side(input_shape[1]))
        or not (_is_integer(input_shape[2]) and input_shape[2] in (1, 3))
    ):
        batch_axis = (
            isinstance(input_shape, Sequence)
            and not isinstance(input_shape, str)
            and len(input_shape) == 4
            and input_shape[0] is None
        )
        hint = " (a model's input_shape without its batch axis: `model.input_shape[1:]`)"
        raise ValueError(
            "`input_shape` should be (height, width, channels): positive integers or None for "
            f"height and width, 1 or 3 channels{hint if batch_axis else ''}. "
            f"Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    return (
        None if height is None else int(height),
        None if width is None else int(width),
        int(channels),
    )


def _is_integer(value: Any) -> bool:
    """An int or a numpy integer, but not a bool (`True` is an int in Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
