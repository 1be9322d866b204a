"""Metrics of P(fake) scores against labels (0 real, 1 fake), with scikit-learn.

A score is called fake when `score >= threshold` (scikit-learn's convention for
ROC thresholds, so a threshold read off the ROC curve reproduces its operating point).

Every function accepts a split with only one class: the metrics that need both
classes (ROC AUC, equal error rate, average precision without positives) are
None and `notes` says why, instead of scikit-learn raising in the middle of a
long evaluation.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics

from dfd.data.schema import LABEL_NAMES

# Same clipping as Keras' epsilon: log-loss stays finite for a confident mistake.
LOG_LOSS_EPSILON = 1e-7
THRESHOLD_METHODS = ("0.5", "val_eer", "val_youden")
AGGREGATE_METHODS = ("mean", "max", "median")


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores; give one score per label")
    if labels.size == 0:
        raise ValueError("no examples to score: the split is empty")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {sorted(set(labels.tolist()))}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity: the model diverged or its input is broken")
    return labels.astype(np.int64), scores


def log_loss(labels, scores) -> float:
    """Mean binary cross-entropy with scores clipped to [eps, 1 - eps]."""
    labels, scores = _check(labels, scores)
    clipped = np.clip(scores, LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    return float(sk_metrics.log_loss(labels, clipped, labels=[0, 1]))


def equal_error_rate(labels, scores) -> tuple[float, float]:
    """(EER, threshold) from the ROC curve; both classes required.

    The EER is interpolated linearly between the two ROC points where the false
    positive rate crosses the false negative rate. The threshold returned gives
    the one of those two points whose FPR and FNR are closest, so applying it
    reproduces an operating point that really exists (see _operating_threshold).
    """
    labels, scores = _check(labels, scores)
    if len(np.unique(labels)) < 2:
        raise ValueError("the equal error rate needs both real and fake examples")
    fpr, tpr, thresholds = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    difference = fpr - fnr          # starts at -1 (fpr 0, fnr 1) and ends at +1
    crossing = int(np.argmax(difference >= 0))
    if difference[crossing] == 0 or crossing == 0:
        eer = float(fpr[crossing])
        best = crossing
    else:
        before = crossing - 1
        fraction = difference[before] / (difference[before] - difference[crossing])
        eer = float(fpr[before] + fraction * (fpr[crossing] - fpr[before]))
        best = before if abs(difference[before]) < abs(difference[crossing]) else crossing
    return eer, _operating_threshold(thresholds, best, scores)


def _operating_threshold(thresholds: np.ndarray, index: int, scores: np.ndarray) -> float:
    """A threshold giving ROC point `index`: midway between its score and the next lower one.

    Every threshold in (thresholds[index + 1], thresholds[index]] gives the same
    point on the validation scores; the edge (an actual validation score) would
    put unseen test scores a hair below it on the wrong side, the middle leaves
    the widest margin on both sides.
    """
    if not np.isfinite(thresholds[index]):
        # roc_curve's first threshold is +inf (nothing called fake); no score can reach it.
        return float(np.nextafter(scores.max(), np.inf))
    lower = thresholds[index + 1] if index + 1 < len(thresholds) else 0.0
    return float((thresholds[index] + lower) / 2)


def youden_threshold(labels, scores) -> float:
    """A threshold maximising TPR - FPR (Youden's J); the first such point on ties, mid-gap (see above)."""
    labels, scores = _check(labels, scores)
    if len(np.unique(labels)) < 2:
        raise ValueError("Youden's J needs both real and fake examples")
    fpr, tpr, thresholds = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return _operating_threshold(thresholds, int(np.argmax(j)), scores)


def choose_threshold(labels, scores, method: str = "0.5") -> float:
    """The decision threshold by `method`, chosen on validation labels and scores.

    "0.5": fixed; "val_eer": where false positive and false negative rates meet;
    "val_youden": maximum of TPR - FPR. Both val_ methods need both classes.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if method == "0.5":
        return 0.5
    labels, scores = _check(labels, scores)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"--threshold={method} needs validation data with both real and fake examples; "
                         "this split has one class only. Use --threshold=0.5")
    if method == "val_eer":
        return equal_error_rate(labels, scores)[1]
    return youden_threshold(labels, scores)


def aggregate_scores(frame_scores, clip_ids, method: str = "mean") -> tuple[list, np.ndarray]:
    """Per-frame scores to one score per clip: (clip ids in first-seen order, scores)."""
    if method not in AGGREGATE_METHODS:
        raise ValueError(f"aggregate method must be one of {AGGREGATE_METHODS}, got {method!r}")
    frame_scores = np.asarray(frame_scores, dtype=np.float64).reshape(-1)
    clip_ids = list(clip_ids)
    if len(clip_ids) != frame_scores.size:
        raise ValueError(f"{frame_scores.size} frame scores but {len(clip_ids)} clip ids")
    reduce = {"mean": np.mean, "max": np.max, "median": np.median}[method]
    order: dict = {}
    for index, clip in enumerate(clip_ids):
        order.setdefault(clip, []).append(index)
    ids = list(order)
    return ids, np.array([reduce(frame_scores[order[clip]]) for clip in ids], dtype=np.float64)


def compute_metrics(labels, scores, threshold: float = 0.5) -> dict:
    """Every number of the report, JSON-serializable.

    Keys: threshold, count, class_counts, accuracy, loss, confusion_matrix
    ([[TN, FP], [FN, TP]], rows true real/fake), classification_report (dict) and
    classification_report_text, roc_auc, average_precision, eer, eer_threshold, notes.
    """
    labels, scores = _check(labels, scores)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    predicted = (scores >= threshold).astype(np.int64)
    notes = []
    report_args = dict(labels=[0, 1], target_names=list(LABEL_NAMES), zero_division=0)
    result = {
        "threshold": float(threshold),
        "count": int(labels.size),
        "class_counts": {name: int((labels == index).sum()) for index, name in enumerate(LABEL_NAMES)},
        "accuracy": float(sk_metrics.accuracy_score(labels, predicted)),
        "loss": log_loss(labels, scores),
        "confusion_matrix": sk_metrics.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "classification_report": sk_metrics.classification_report(labels, predicted, output_dict=True, **report_args),
        "classification_report_text": sk_metrics.classification_report(labels, predicted, digits=4, **report_args),
        "roc_auc": None, "average_precision": None, "eer": None, "eer_threshold": None,
    }
    if len(np.unique(labels)) == 2:
        result["roc_auc"] = float(sk_metrics.roc_auc_score(labels, scores))
        result["eer"], result["eer_threshold"] = equal_error_rate(labels, scores)
    else:
        present = LABEL_NAMES[int(labels[0])]
        notes.append(f"only '{present}' examples: ROC AUC and equal error rate are undefined")
    if labels.any():
        result["average_precision"] = float(sk_metrics.average_precision_score(labels, scores))
    else:
        notes.append("no fake examples: average precision is undefined")
    result["notes"] = notes
    return result
