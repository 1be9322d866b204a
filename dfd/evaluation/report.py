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
        f"({metrics['count']} examples: {metrics['class_counts']['real']} real, "
        f"{metrics['class_counts']['fake']} fake)",
        "",
        "Classification Report:",
        metrics["classification_report_text"].rstrip(),
        "",
        "Confusion Matrix (rows: true real, fake; columns: predicted real, fake):",
        f"[[{matrix[0][0]} {matrix[0][1]}]",
        f" [{matrix[1][0]} {matrix[1][1]}]]",
        "",
        f"ROC AUC: {_number(metrics['roc_auc'])}  Average precision: {_number(metrics['average_precision'])}  "
        f"EER: {_number(metrics['eer'])}"
        + (f" (at {metrics['eer_threshold']:.4f})" if metrics["eer_threshold"] is not None else ""),
    ]
    lines += [f"Note: {note}" for note in metrics.get("notes", [])]
    return "\n".join(lines)


def format_samples(sources: Sequence[str], labels, scores, threshold: float, count: int = 8) -> str:
    """A few sample predictions, as the seed printed them, with the file each came from."""
    lines = ["Sample Predictions and True Labels:"]
    for source, label, score in list(zip(sources, labels, scores, strict=True))[:count]:
        lines.append(f"True Label: {int(label)}, Predicted: {int(score >= threshold)}  P(fake)={score:.4f}  {source}")
    return "\n".join(lines)


def format_report(results: dict, split: str, sources, labels, scores, extra: Sequence[str] = ()) -> str:
    """The whole report: `results` maps a title (e.g. "threshold 0.5") to a compute_metrics dict."""
    blocks = [f"Evaluation of split '{split}'", *extra]
    chosen = list(results.values())[-1]  # samples at the chosen threshold
    blocks.append(format_samples(sources, labels, scores, chosen["threshold"]))
    blocks += [format_metrics(metrics, title) for title, metrics in results.items()]
    return "\n\n".join(blocks) + "\n"


def format_trust(result: dict) -> str:
    """Calibration (and its fit), robustness: the lines after the report."""
    values = result["calibration"]
    lines = [f"Calibration: ECE {values['ece']:.4f} ({values['ece_bins']} bins)  Brier {values['brier']:.4f}"
             + (f"  (temperature {result['temperature']:.4f})" if result.get("temperature", 1.0) != 1.0 else "")]
    fit = result.get("calibration_fit")
    if fit and not fit["kept"]:
        lines.append(f"Temperature scaling on the {fit['fitted_on']} not kept: {fit['reason']}")
    elif fit:
        lines.append(f"Temperature scaling fitted on the {fit['fitted_on']}: T = {fit['temperature']:.4f} "
                     f"({fit['reason']})")
        lines.append(f"{'':8}{'loss':>8}{'ECE':>8}{'Brier':>8}{'acc':>8}{'AUC':>8}")
        for name in ("before", "after"):
            row = fit[name]
            lines.append(f"{name:8}{row['loss']:8.4f}{row['ece']:8.4f}{row['brier']:8.4f}{row['accuracy']:8.4f}"
                         f"{_number(row['roc_auc']):>8}")
        if fit["after"]["loss"] > fit["before"]["loss"]:
            lines.append("Note: the temperature made this split's loss worse, though it lowered the val split's "
                         "held-out loss: this split is unlike the val split. Check it before trusting calibrated "
                         "probabilities" + (" (delete calibration.json to go back)" if fit["written"] else ""))
    robustness = result.get("robustness")
    if robustness:
        lines.append(f"Robustness (threshold {robustness['threshold']:.4f}; seed {robustness['seed']}):")
        lines.append(f"{'perturbation':16}{'level':>8}{'AUC':>10}{'accuracy':>10}")
        base = robustness["unperturbed"]
        lines.append(f"{'none':16}{'':>8}{_number(base['roc_auc']):>10}{base['accuracy']:10.4f}")
        for name, rows in robustness["perturbations"].items():
            for row in rows:
                lines.append(f"{name:16}{row['level']:>8g}{_number(row['roc_auc']):>10}{row['accuracy']:10.4f}")
    return "\n".join(lines)
