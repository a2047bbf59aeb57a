"""Evaluation on the test split: accuracy, loss, per-class precision/recall, confusion matrix."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from tf_alexnet import plots
from tf_alexnet.config import TrainConfig
from tf_alexnet.data import PipelineSpec, make_datasets
from tf_alexnet.model import outputs_probabilities
from tf_alexnet.predictions import to_probabilities
from tf_alexnet.run_dir import RunDir
from tf_alexnet.saving import load_model


def evaluate(
    model_path: str | pathlib.Path,
    config: TrainConfig,
    output_dir: str | pathlib.Path,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Evaluates a `.keras` model on the test split of `config`'s data; writes report and plot.

    The input size and channels come from the model; only the data settings of `config`
    (source, split fractions, seed) are used.

    Writes `evaluation.json` and `confusion_matrix.png` into `output_dir`.
    """
    model = load_model(model_path, compile=False)
    height, width, channels = model.input_shape[1:]
    pipeline = PipelineSpec(
        image_size=(height, width), channels=channels, batch_size=batch_size, one_hot=False
    )
    datasets = make_datasets(config.data_spec(), pipeline)
    labels, outputs = [], []
    for images, batch_labels in datasets.test:
        outputs.append(np.asarray(model.predict_on_batch(images), np.float64))
        labels.append(batch_labels.numpy())
    y_true = np.concatenate(labels)
    scores = np.concatenate(outputs)
    probabilities = to_probabilities(scores, from_logits=not outputs_probabilities(model))
    report = classification_report(y_true, probabilities, datasets.class_names)
    report["model"] = str(model_path)
    report["dataset"] = config.image_folder or config.dataset

    output = RunDir(pathlib.Path(output_dir))
    output.root.mkdir(parents=True, exist_ok=True)
    output.write_json(output.evaluation, report)
    plots.confusion_matrix(
        np.array(report["confusion_matrix"]),
        datasets.class_names,
        output.confusion_matrix,
        title=f"Test accuracy {report['accuracy']:.4f} ({report['num_examples']:,} images)",
    )
    return report


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, cross-entropy, per-class precision/recall/F1 and the confusion matrix."""
    num_classes = len(class_names)
    y_pred = probabilities.argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    true_positives = np.diag(matrix).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positives / matrix.sum(axis=0))
        recall = np.nan_to_num(true_positives / matrix.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    picked = probabilities[np.arange(len(y_true)), y_true]
    return {
        "num_examples": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        "loss": float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(matrix[i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a small text table."""
    lines = [f"{'class':<14} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<14} {row['precision']:>9.4f} {row['recall']:>7.4f} "
            f"{row['f1']:>6.4f} {row['support']:>8}"
        )
    lines.append(
        f"test accuracy {report['accuracy']:.4f}, loss {report['loss']:.4f} "
        f"on {report['num_examples']:,} images"
    )
    return "\n".join(lines)
