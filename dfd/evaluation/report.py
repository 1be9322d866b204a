"""The printed evaluation report, laid out like the seed project's notebook output."""

from __future__ import annotations

from typing import Sequence


def _number(value, digits: int = 4) -> str:
    return "undefined" if value is None else f"{value:.{digits}f}"


def format_metrics(metrics: dict, title: str) -> str:
    """One block: accuracy and loss, classification report, confusion matrix, AUC/AP/EER."""
    matrix = metrics["confusion_matrix"]
    lines = [
        f"== {title} (threshold {metrics['threshold']:.4f}) ==",
        f"Test Loss: {metrics['loss']:.4f}  Test Accuracy: {metrics['accuracy']:.4f}  "
        f"({metrics['count']} examples: {metrics['class_counts']['real']} real, {metrics['class_counts']['fake']} fake)",
        "",
        "Classification Report:",
        metrics["classification_report_text"].rstrip(),
        "",
        "Confusion Matrix (rows: true real, fake; columns: predicted real, fake):",
        f"[[{matrix[0][0]} {matrix[0][1]}]",
        f" [{matrix[1][0]} {matrix[1][1]}]]",
        "",
        f"ROC AUC: {_number(metrics['roc_auc'])}  Average precision: {_number(metrics['average_precision'])}  "
        f"EER: {_number(metrics['eer'])}" + (f" (at {metrics['eer_threshold']:.4f})" if metrics["eer_threshold"] is not None else ""),
    ]
    lines += [f"Note: {note}" for note in metrics.get("notes", [])]
    return "\n".join(lines)


def format_samples(sources: Sequence[str], labels, scores, threshold: float, count: int = 8) -> str:
    """A few sample predictions, as the seed printed them, with the file each came from."""
    lines = ["Sample Predictions and True Labels:"]
    for source, label, score in list(zip(sources, labels, scores))[:count]:
        lines.append(f"True Label: {int(label)}, Predicted: {int(score >= threshold)}  P(fake)={score:.4f}  {source}")
    return "\n".join(lines)


def format_report(results: dict, split: str, sources, labels, scores, extra: Sequence[str] = ()) -> str:
    """The whole report: `results` maps a title (e.g. "threshold 0.5") to a compute_metrics dict."""
    blocks = [f"Evaluation of split '{split}'", *extra]
    chosen = list(results.values())[-1]  # samples at the chosen threshold
    blocks.append(format_samples(sources, labels, scores, chosen["threshold"]))
    blocks += [format_metrics(metrics, title) for title, metrics in results.items()]
    return "\n\n".join(blocks) + "\n"
