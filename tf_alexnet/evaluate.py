"""Evaluation on the test split: accuracy, loss, precision/recall/F1 per class and averaged,
confusion matrix (counts and normalized by true class)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from tf_alexnet import contract, plots
from tf_alexnet.columns import pad, screen_width
from tf_alexnet.config import TrainConfig
from tf_alexnet.data import make_datasets
from tf_alexnet.errors import UserError
from tf_alexnet.exported import ExportedModel
from tf_alexnet.model import check_classifier
from tf_alexnet.pipeline import PipelineSpec
from tf_alexnet.predictions import to_probabilities, trained_class_names
from tf_alexnet.progress import report_progress
from tf_alexnet.run_dir import EVALUATED_MODEL_KEY, RunDir, model_fingerprint
from tf_alexnet.saving import load_model
from tf_alexnet.sources import skipped_notice


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A model to evaluate: its input shape, classes (and their names, where it carries them)
    and a function from a batch of pixels to class probabilities."""

    input_shape: tuple[int, int, int]
    classes: int
    class_names: tuple[str, ...] | None
    probabilities: Callable[[Any], np.ndarray]


def keras_scorer(path: str | pathlib.Path) -> Scorer:
    """A `.keras` model (logits or probabilities, as it outputs them), with the class names of
    the run it belongs to, when it is a run's model (`predictions.trained_class_names`)."""
    model = load_model(path, compile=False)
    from_logits = not check_classifier(model, path)  # one line for a model it cannot score

    def probabilities(images: Any) -> np.ndarray:
        scores = np.asarray(model.predict_on_batch(images), np.float64)
        return to_probabilities(scores, from_logits=from_logits)

    classes = model.output_shape[-1]
    names = trained_class_names(path, classes)
    return Scorer(tuple(model.input_shape[1:]), classes, names, probabilities)


def export_scorer(path: str | pathlib.Path) -> Scorer:
    """An exported model folder (`BASE/NAME`, its highest version, or `BASE/NAME/VERSION`):
    its pixels signature, the graph that `serving_default` runs after decoding."""
    exported = ExportedModel.find(path)
    exported.check_bytes_signature()  # a tf-alexnet export, or one line saying what it is
    names = exported.class_names()
    signature = exported.signature(contract.SIGNATURE_IMAGE_TENSOR)
    shape = signature.structured_input_signature[1][contract.INPUT_IMAGE_TENSOR].shape[1:]

    def probabilities(images: Any) -> np.ndarray:
        outputs = signature(**{contract.INPUT_IMAGE_TENSOR: images})
        return np.asarray(outputs[contract.OUTPUT_PROBABILITIES], np.float64)

    return Scorer(tuple(shape), len(names), names, probabilities)


def scorer(path: str | pathlib.Path) -> Scorer:
    """`export_scorer` for a folder, else `keras_scorer`."""
    return export_scorer(path) if pathlib.Path(path).is_dir() else keras_scorer(path)


def evaluate(
    model_path: str | pathlib.Path,
    config: TrainConfig,
    output_dir: str | pathlib.Path,
    batch_size: int = 256,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    *,
    of_run: bool = False,
) -> dict[str, Any]:
    """Evaluates a `.keras` model or an exported model folder on the test split of `config`'s
    data; writes report and plot.

    The input size and channels come from the model; only the data settings of `config`
    (source, split fractions, seed) are used. An export is evaluated through its pixels
    signature, as stored (float32). The class names of an export, or of a run's model, must
    be the data's.

    Writes `evaluation.json` and `confusion_matrix.png` into `output_dir`. `on_report` is
    called with the report before they are written (the CLI prints it there), so a write
    that fails (a read-only or full disk) loses no result. An empty test split is refused
    in one line, before anything is written; `of_run` says that `config` is a run's own, for
    the way out that line gives.

    The report records the SHA-256 of a `.keras` file, read before the model is loaded, so
    that a run's test accuracy is taken only for the model file it scored
    (`RunDir.evaluation_of`).
    """
    fingerprint = model_fingerprint(model_path) if pathlib.Path(model_path).is_file() else None
    model = scorer(model_path)
    height, width, channels = model.input_shape
    pipeline = PipelineSpec(
        image_size=(height, width), channels=channels, batch_size=batch_size, one_hot=False
    )
    datasets = make_datasets(config.data_spec(), pipeline, training=False)
    if notice := skipped_notice(datasets.skipped):
        print(notice, flush=True)
    data = config.image_folder or config.dataset
    # `evaluate RUN_DIR` takes where the run's data is now, not another dataset
    flags = "--image-folder DIR" if of_run else "--image-folder DIR or --dataset NAME"
    if model.classes != len(datasets.class_names):
        names = ", ".join(map(repr, datasets.class_names[:4]))
        more = ", ..." if len(datasets.class_names) > 4 else ""
        raise UserError(
            f"The model {str(model_path)!r} has {model.classes} classes, but {data!r} has "
            f"{len(datasets.class_names)} ({names}{more}). Evaluate it on the data it was "
            f"trained on ({flags})."
        )
    if model.class_names is not None and model.class_names != tuple(datasets.class_names):
        known = zip(model.class_names, datasets.class_names, strict=True)  # counts agree
        differ = next(i for i, (ours, theirs) in enumerate(known) if ours != theirs)
        raise UserError(
            f"The model {str(model_path)!r} names class {differ} {model.class_names[differ]!r}, "
            f"but {data!r} names it {datasets.class_names[differ]!r}. Evaluate it on the data "
            f"it was trained on ({flags})."
        )
    listing = datasets.listing
    if (
        of_run
        and listing
        and not listing["test_folder"]
        and (changed := RunDir(pathlib.Path(model_path).parent).listing_changed(listing))
    ):
        raise UserError(
            f"The image folder {data!r} has changed since the run was trained ({changed}): "
            "its test split would be drawn anew, with images the run trained on. Put the "
            "folder back as it was, or evaluate the run's model on a folder with train/ and "
            "test/ subfolders (tf-alexnet evaluate RUN_DIR/best.keras --image-folder DIR)."
        )
    if not datasets.num_test:  # np.concatenate of no batches: "need at least one array"
        raise UserError(empty_test_split(config, data, of_run))
    for note in datasets.absent_notes(("test",)):
        print(note, flush=True)
    output = RunDir(pathlib.Path(output_dir))
    output.root.mkdir(parents=True, exist_ok=True)  # before the minutes of evaluation
    labels, outputs = [], []
    steps = math.ceil(datasets.num_test / batch_size)
    with datasets.reading():
        for images, batch_labels in report_progress(datasets.test, steps, batch_size, "evaluate"):
            outputs.append(model.probabilities(images))
            labels.append(batch_labels.numpy())
    y_true = np.concatenate(labels)
    probabilities = np.concatenate(outputs)
    report = classification_report(y_true, probabilities, datasets.class_names)
    report["model"] = str(model_path)
    if fingerprint is not None:
        report[EVALUATED_MODEL_KEY] = fingerprint
    report["dataset"] = config.image_folder or config.dataset
    if on_report is not None:
        on_report(report)

    output.write_json(output.evaluation, report)
    plots.confusion_matrix(
        np.array(report["confusion_matrix"]),
        np.array(report["confusion_matrix_normalized"]),
        datasets.class_names,
        output.confusion_matrix,
        title=f"Test accuracy {report['accuracy']:.4f} ({report['num_examples']:,} images)",
    )
    return report


def empty_test_split(config: TrainConfig, data: Any, of_run: bool) -> str:
    """What to do about data whose test split holds no image (`of_run`: a run's own data)."""
    if config.test_fraction == 0:
        if of_run:
            return (
                f"The run's data has no test split (test_fraction=0): {data!r} went to "
                f"{'training and validation' if config.validation_fraction else 'training'}. "
                "Train again with --test-fraction above 0 (e.g. 0.1), or pass "
                "--image-folder with a folder of train/ and test/ subfolders."
            )
        return (
            f"The data {data!r} has no test split (test_fraction=0). Pass --test-fraction above "
            "0 (e.g. 0.1), or --image-folder with a folder of train/ and test/ subfolders."
        )
    return (  # a fraction of too few images that rounds to none, an empty TFDS test split
        f"The test split of {data!r} holds no image (test_fraction={config.test_fraction:g}). "
        "Use a larger --test-fraction or more images, or a folder with a test/ subfolder."
    )


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, cross-entropy, per-class and averaged precision/recall/F1, confusion matrices.

    `macro_avg` weighs every class alike, `weighted_avg` by its support (as scikit-learn's
    `classification_report`). `confusion_matrix` holds counts (rows: true class, columns:
    predicted); `confusion_matrix_normalized` divides each row by its class's support, so
    the diagonal is the per-class recall (a class without examples is a row of zeros).
    """
    num_classes = len(class_names)
    y_pred = probabilities.argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    true_positives = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positives / matrix.sum(axis=0))
        recall = np.nan_to_num(true_positives / support)
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        normalized = np.nan_to_num(matrix / support[:, None])
    weights = support / support.sum() if support.sum() else np.zeros(num_classes)
    picked = probabilities[np.arange(len(y_true)), y_true]

    def average(weighting: np.ndarray) -> dict[str, float | int]:
        return {
            "precision": float(precision @ weighting),
            "recall": float(recall @ weighting),
            "f1": float(f1 @ weighting),
            "support": int(support.sum()),
        }

    return {
        "num_examples": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        # + 0.0: -log(1) is -0.0, which the report would keep ("loss": -0.0)
        "loss": float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()) + 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "macro_avg": average(np.full(num_classes, 1 / num_classes)),
        "weighted_avg": average(weights),
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalized": normalized.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a small text table, its first column as wide as its longest class name
    on screen (at least 14 columns)."""
    rows = list(report["per_class"].items())
    rows += [("macro avg", report["macro_avg"]), ("weighted avg", report["weighted_avg"])]
    width = max([14, *(screen_width(name) for name, _ in rows)])
    lines = [f"{pad('class', width)} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for i, (name, row) in enumerate(rows):
        if i == len(report["per_class"]):
            lines.append("")
        lines.append(
            f"{pad(name, width)} {_fixed(row['precision'], '>9.4f')} "
            f"{_fixed(row['recall'], '>7.4f')} "
            f"{_fixed(row['f1'], '>6.4f')} {row['support']:>8}"
        )
    lines.append(
        f"test accuracy {_fixed(report['accuracy'], '.4f')}, loss {_fixed(report['loss'], '.4f')} "
        f"on {report['num_examples']:,} images"
    )
    return "\n".join(lines)


def _fixed(value: float, spec: str) -> str:
    """`format(value, spec)`, without the sign of a value that rounds to zero ("-0.0000")."""
    return format(abs(value) if float(format(value, spec)) == 0 else value, spec)
