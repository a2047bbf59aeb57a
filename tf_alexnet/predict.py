"""Local prediction from an exported SavedModel, a run directory or a `.keras` file."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_alexnet import contract
from tf_alexnet.columns import pad, screen_width
from tf_alexnet.errors import UserError
from tf_alexnet.exported import ExportedModel, version_numbers
from tf_alexnet.image_header import LOCAL_MAX_PIXELS, too_many_pixels
from tf_alexnet.model import check_classifier
from tf_alexnet.predictions import (
    Top,
    decode_predictions,
    to_probabilities,
    trained_class_names,
    unnamed_classes,
)
from tf_alexnet.preprocess import encoded_batch
from tf_alexnet.run_dir import RunDir
from tf_alexnet.saving import load_model
from tf_alexnet.sources import image_files, image_problem, palette_problem

STDIN = "-"
"""An IMAGE argument that stands for one image read from standard input."""

PREDICT_BATCH = 64
"""Images per model call: a command line of thousands of files is not one giant batch."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    image: str
    top: Top = dataclasses.field(default_factory=list)
    error: str | None = None


class Predictor:
    """Probabilities for encoded images, from a SavedModel folder, a run directory (its best
    model, else its final one, as `export` reads it) or a `.keras` file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = pathlib.Path(path)
        run = RunDir(path)
        if path.is_dir() and run.is_run():
            path = run.model_path()
        if path.is_file():
            self._model = load_model(path, compile=False)
            self._from_logits = not check_classifier(self._model, path)
            self._signature = None
            classes = self._model.output_shape[-1]
            named = trained_class_names(path, classes)
            self.class_names = named or contract.default_class_names(classes)
            if not named:  # on standard error: standard output may be --json
                remedy = (
                    "Predict with its run directory, or with a model exported with "
                    "--image-folder or --dataset (the data it was trained on)."
                )
                note = unnamed_classes(path, self.class_names, remedy)
                print(f"Note: {note}", file=sys.stderr, flush=True)
        elif path.is_dir():
            self._signature, self.class_names = _newest_that_loads(path)
        else:
            raise UserError(f"No model at {str(path)!r}.")

    def probabilities(self, encoded_images: Sequence[bytes]) -> np.ndarray:
        if self._signature is not None:
            outputs = self._signature(
                **{contract.INPUT_IMAGE_BYTES: tf.constant(list(encoded_images))}
            )
            return np.asarray(outputs[contract.OUTPUT_PROBABILITIES])
        pixels = encoded_batch(encoded_images, self._model.input_shape[1:])
        outputs = np.asarray(self._model(pixels, training=False))
        return to_probabilities(outputs, from_logits=self._from_logits)


def _newest_that_loads(path: pathlib.Path) -> tuple[Any, tuple[str, ...]]:
    """The bytes signature and class names of the version folder `path`, or of a model
    folder's newest version that loads, as the server serves it: a newer version that does not
    load (half copied) is named on standard error and passed over (it failed the command)."""
    newest = ExportedModel.find(path)
    if newest.path == path:  # a version folder: that one, or its error
        return newest.signature(contract.SIGNATURE_IMAGE_BYTES), newest.class_names()
    passed_over: list[UserError] = []
    for version in reversed(version_numbers(path)):
        exported = ExportedModel.find(path, version)
        try:
            loaded = exported.signature(contract.SIGNATURE_IMAGE_BYTES), exported.class_names()
        except UserError as err:
            passed_over.append(err)
            continue
        for reason in passed_over:  # on standard error: standard output may be --json
            print(f"Note: {reason} Predicting with version {version}.", file=sys.stderr)
        return loaded
    raise passed_over[0]


def list_images(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """The image files named: a folder stands for the images under it (at any depth, sorted,
    hidden ones left out; one without images stays, to be reported). Also returns the folders'
    files of other types, left out."""
    images: list[str] = []
    skipped: list[str] = []
    for argument in arguments:
        if argument == STDIN or not os.path.isdir(argument):
            images.append(argument)
            continue
        found, others = image_files(argument)
        images += found or [argument]
        skipped += others
    return images, skipped


def _read_stdin() -> bytes:
    """Standard input's bytes (ValueError when there is none, or it is a terminal)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise ValueError("no standard input to read an image from")
    if stream.isatty():
        raise ValueError(
            "standard input is a terminal; pipe an image in (cat shirt.png | tf-alexnet predict "
            "--model MODEL -)"
        )
    data: bytes = stream.read()
    return data


def _read_image(path: str) -> bytes:
    """The file's bytes (`-`: standard input's); raises ValueError when there are none, for
    an image of more than `LOCAL_MAX_PIXELS`, or for an 8-bit colour-palette BMP, which the
    models' decoder would read as gray. Whether
    the bytes decode is found by the model call (`_scored`): checking first decoded each
    image twice, and a 7 MB photo's check took longer than the exported model's call."""
    if path != STDIN and os.path.isdir(path):
        raise ValueError(f"a folder without {contract.IMAGE_FORMATS} images")
    try:
        data = _read_stdin() if path == STDIN else pathlib.Path(path).read_bytes()
    except OSError as err:
        raise ValueError(err.strerror or str(err)) from None
    if not data:
        raise ValueError("an empty file")
    if too_large := too_many_pixels(data, LOCAL_MAX_PIXELS):
        raise ValueError(f"{too_large}; scale it down first")
    if palette := palette_problem(data):
        raise ValueError(palette)
    return data


def _scored(predictor: Predictor, encoded: list[bytes]) -> list[np.ndarray | str]:
    """Each image's probabilities, or why it cannot be read. One model call when every image
    decodes; when one does not, each is checked (`image_problem`), and the others go again."""
    try:
        return list(predictor.probabilities(encoded))
    except (tf.errors.OpError, ValueError):
        pass
    problems = [image_problem(data) for data in encoded]
    good = [data for data, problem in zip(encoded, problems, strict=True) if problem is None]
    scores = iter(predictor.probabilities(good) if good else [])
    return [next(scores) if problem is None else problem for problem in problems]


def iter_predictions(
    images: Sequence[str], model: str | os.PathLike[str], top_k: int = contract.TOP_K
) -> Iterator[Prediction]:
    """Top-k classes per image, in order, as each batch of `PREDICT_BATCH` readable images is
    scored: no more than one batch of encoded images is held (all of a folder's were read
    before the first was scored: a folder of phone photos filled the memory). Unreadable
    images get an error and do not stop the others."""
    if top_k < 1:
        raise UserError(f"`top_k` should be >= 1. Received: {top_k}")
    if list(images).count(STDIN) > 1:
        raise UserError(f"Standard input ({STDIN}) holds one image: name it once.")
    predictor = Predictor(model)
    waiting: list[tuple[str, bytes | str]] = []  # (image, its bytes or why it cannot be read)

    def scored() -> Iterator[Prediction]:
        encoded = [data for _, data in waiting if isinstance(data, bytes)]
        results = iter(_scored(predictor, encoded))
        for image, data in waiting:
            result = next(results) if isinstance(data, bytes) else data
            if isinstance(result, str):
                yield Prediction(image, error=result)
            else:
                top = decode_predictions(result[None], top_k, predictor.class_names)[0]
                yield Prediction(image, top=top)
        waiting.clear()

    readable = 0
    for image in images:
        try:
            waiting.append((image, _read_image(image)))
            readable += 1
        except ValueError as err:
            waiting.append((image, str(err)))
        if readable == PREDICT_BATCH:
            yield from scored()
            readable = 0
    yield from scored()


def predict_files(
    images: Sequence[str], model: str | os.PathLike[str], top_k: int = contract.TOP_K
) -> list[Prediction]:
    """`iter_predictions` as a list."""
    return list(iter_predictions(images, model, top_k))


def format_predictions(predictions: Sequence[Prediction]) -> str:
    lines = []
    for prediction in predictions:
        if prediction.error:
            continue
        lines.append(prediction.image)
        width = max(screen_width(name) for _, name, _ in prediction.top)
        digits = len(str(len(prediction.top)))  # rank 10 in line with rank 9
        lines += [
            f"  {rank:>{digits}}. {pad(name, width)}  {probability:.4f}"
            for rank, (_, name, probability) in enumerate(prediction.top, start=1)
        ]
    return "\n".join(lines)


def to_json(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """`--json`'s answer: per image its classes as the API's `top_k` has them (class_id,
    class_name, score), or its error."""
    return [
        {"image": p.image, "error": p.error}
        if p.error
        else {
            "image": p.image,
            "predictions": [
                {"class_id": i, "class_name": name, "score": score} for i, name, score in p.top
            ],
        }
        for p in predictions
    ]
