"""The evaluation figures, drawn once and written twice: as PNG files and as TensorBoard images.

matplotlib runs on the Agg backend (no display on servers and CI). Each figure
comes from scikit-learn's curve functions, not hand-written ones.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as sk_metrics  # noqa: E402

from dfd import atomic_files  # noqa: E402
from dfd.data.schema import LABEL_NAMES  # noqa: E402

PLOT_NAMES = ("confusion_matrix", "roc", "precision_recall", "score_histogram")


def confusion_matrix_figure(matrix, threshold: float):
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    sk_metrics.ConfusionMatrixDisplay(matrix, display_labels=list(LABEL_NAMES)).plot(
        ax=axes, cmap="Blues", colorbar=False, values_format="d")
    axes.set_title(f"Confusion matrix (threshold {threshold:.3f})")
    figure.tight_layout()
    return figure


def roc_figure(labels, scores, auc: float | None, eer: float | None):
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    if auc is None:
        axes.text(0.5, 0.5, "ROC undefined:\none class only", ha="center", va="center")
    else:
        fpr, tpr, _ = sk_metrics.roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=f"AUC {auc:.4f}")
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        if eer is not None:
            axes.plot([eer], [1 - eer], "o", label=f"EER {eer:.4f}")
        axes.legend(loc="lower right")
    axes.set(xlabel="False positive rate (real called fake)", ylabel="True positive rate (fake caught)",
             xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    figure.tight_layout()
    return figure


def precision_recall_figure(labels, scores, average_precision: float | None):
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    if average_precision is None:
        axes.text(0.5, 0.5, "Precision-recall undefined:\nno fake examples", ha="center", va="center")
    else:
        precision, recall, _ = sk_metrics.precision_recall_curve(labels, scores)
        axes.step(recall, precision, where="post", label=f"AP {average_precision:.4f}")
        axes.axhline(float(np.mean(labels)), linestyle=":", color="grey", label="chance")
        axes.legend(loc="lower left")
    axes.set(xlabel="Recall (fake)", ylabel="Precision (fake)", xlim=(0, 1), ylim=(0, 1.01),
             title="Precision-recall")
    figure.tight_layout()
    return figure


def score_histogram_figure(labels, scores, threshold: float):
    labels, scores = np.asarray(labels), np.asarray(scores)
    figure, axes = plt.subplots(figsize=(4.2, 3.8), dpi=100)
    bins = np.linspace(0, 1, 26)
    for index, name in enumerate(LABEL_NAMES):
        axes.hist(scores[labels == index], bins=bins, alpha=0.6, label=f"{name} ({int((labels == index).sum())})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="P(fake)", ylabel="examples", title="Scores per class")
    axes.legend()
    figure.tight_layout()
    return figure


def evaluation_figures(labels, scores, metrics: dict) -> dict:
    """name -> matplotlib figure for every plot in PLOT_NAMES."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return {
        "confusion_matrix": confusion_matrix_figure(metrics["confusion_matrix"], metrics["threshold"]),
        "roc": roc_figure(labels, scores, metrics["roc_auc"], metrics["eer"]),
        "precision_recall": precision_recall_figure(labels, scores, metrics["average_precision"]),
        "score_histogram": score_histogram_figure(labels, scores, metrics["threshold"]),
    }


def figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_figures(figures: dict, png_dir: str | Path, tensorboard_dir: str | Path | None = None,
                  step: int = 0, prefix: str = "") -> list[Path]:
    """Saves each figure as png_dir/<prefix><name>.png and, given a directory, as a TensorBoard image.

    Closes the figures. Returns the PNG paths.
    """
    png_dir = Path(png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    encoded = {}
    paths = []
    for name, figure in figures.items():
        encoded[name] = figure_png(figure)
        plt.close(figure)
        path = png_dir / f"{prefix}{name}.png"
        atomic_files.write_bytes(path, encoded[name])
        paths.append(path)
    if tensorboard_dir is not None:
        import tensorflow as tf  # lazily: the PNGs need no TensorFlow

        writer = tf.summary.create_file_writer(str(tensorboard_dir))
        with writer.as_default():
            for name, data in encoded.items():
                image = tf.io.decode_png(data, channels=4)[tf.newaxis]
                tf.summary.image(f"{prefix}{name}", image, step=step)
        writer.flush()
        writer.close()
    return paths
