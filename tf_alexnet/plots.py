"""Pictures of a run: training curves and the confusion matrix (matplotlib, no display).

Figures are made with `matplotlib.figure.Figure`, not pyplot: no backend is chosen or
changed for the process (a notebook importing the training API keeps its inline figures).

Class names in scripts that matplotlib's default font (DejaVu Sans) lacks, such as Chinese or
Japanese folder names, are drawn as empty boxes: the picture is still right by position, and
`evaluation.json` has the names. matplotlib's warning for each missing glyph ("Glyph 29483
missing from font(s) DejaVu Sans") is silenced, as it said nothing the reader could act on.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tf_alexnet.files import write_atomic


def training_curves(history: Sequence[dict[str, float]], path: str | os.PathLike[str]) -> None:
    """Loss and accuracy per epoch, train against validation, side by side."""
    epochs = [int(row["epoch"]) + 1 for row in history]
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [row.get(prefix + metric, np.nan) for row in history]
            axis.plot(epochs, values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_title("Loss")
    axes[1].set_title("Accuracy")
    figure.tight_layout()
    _save(figure, path)


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Writes `figure` as a PNG atomically: a failed write (a full disk) names `path` and
    keeps the previous picture, where matplotlib's own left a cut one and named no file."""
    data = io.BytesIO()
    figure.savefig(data, format="png", dpi=100)
    write_atomic(path, data.getvalue())


@contextlib.contextmanager
def _missing_glyphs_quiet() -> Iterator[None]:
    """Silences matplotlib's "Glyph N missing from font(s) ..." warnings (see the module)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning
        )
        yield


def confusion_matrix(
    matrix: np.ndarray,
    normalized: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "",
) -> None:
    """Counts beside the row-normalized matrix (each true class sums to 1), true classes as rows."""
    with _missing_glyphs_quiet():
        _draw_confusion_matrix(matrix, normalized, class_names, path, title)


def _draw_confusion_matrix(
    matrix: np.ndarray,
    normalized: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    title: str,
) -> None:
    size = max(6.0, 0.6 * len(class_names) + 2)
    figure = Figure(figsize=(2 * size, size))
    axes = figure.subplots(1, 2)
    panels = (
        (axes[0], matrix, "counts", "{:d}"),
        (axes[1], normalized, "normalized by true class", "{:.2f}"),
    )
    ticks = np.arange(len(class_names))
    for axis, values, subtitle, label in panels:
        image = axis.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_xticks(ticks, class_names, rotation=45, ha="right")
        axis.set_yticks(ticks, class_names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(subtitle)
        threshold = values.max() / 2 if values.size else 0
        if len(class_names) <= 20:
            for (row, col), value in np.ndenumerate(values):
                color = "white" if value > threshold else "black"
                axis.text(
                    col, row, label.format(value), ha="center", va="center", color=color, fontsize=8
                )
    figure.suptitle(title or "Confusion matrix")
    figure.tight_layout()
    _save(figure, path)
