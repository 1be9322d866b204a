"""How far a probability can be trusted: calibration error, Brier score, reliability diagram, temperature scaling.

    expected_calibration_error(labels, scores, bins=15) -> float   # ECE, equal-width bins on P(fake)
    brier_score(labels, scores) -> float                           # mean squared error of P(fake)
    calibration_metrics(labels, scores) -> dict                    # both, plus the per-bin table
    reliability_figure(labels, scores, title) -> matplotlib figure
    fit_temperature(labels, frame_scores, aggregate) -> float      # T minimising the val split's NLL
    apply_temperature(scores, temperature) -> scores               # sigmoid(logit(p) / T)
    read_calibration(directory) -> (temperature, source)           # calibration.json, or (1.0, why not)

Temperature scaling (Guo et al., 2017) divides the model's logit by one number T fitted on held-out data:
it changes how confident the probabilities are, never their order, so ROC AUC stays the same and a
threshold maps exactly (to_calibrated_threshold). T is applied to every model output (every frame of an
image model), so per-frame scores, their aggregate and the threshold all live on one scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dfd.atomic_files import write_json

CALIBRATION_FILE = "calibration.json"
ECE_BINS = 15
# log T is searched in [log 0.02, log 50]: a model needing more than that is broken, not miscalibrated.
LOG_TEMPERATURE_BOUNDS = (float(np.log(0.02)), float(np.log(50.0)))
# Same clipping as metrics.LOG_LOSS_EPSILON: a float32 sigmoid of 1.0 still has a finite logit.
EPSILON = 1e-7


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"need one score per label and at least one example, got {labels.size} and {scores.size}")
    return labels, scores


def logit(scores) -> np.ndarray:
    scores = np.clip(np.asarray(scores, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(scores) - np.log1p(-scores)


def apply_temperature(scores, temperature: float) -> np.ndarray:
    """P(fake) with the logit divided by `temperature`; 1.0 returns the scores unchanged."""
    scores = np.asarray(scores, dtype=np.float64)
    if temperature == 1.0:
        return scores
    return 1.0 / (1.0 + np.exp(-logit(scores) / temperature))


def to_calibrated_threshold(threshold: float, temperature: float) -> float:
    """The threshold on calibrated scores that makes the same decisions as `threshold` on raw ones."""
    if threshold <= 0.0 or threshold >= 1.0:
        return float(threshold)
    return float(apply_temperature(np.array([threshold]), temperature)[0])


def bin_table(labels, scores, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of P(fake) in [0, 1]: count, mean score, fraction fake (empty bins left out)."""
    labels, scores = _arrays(labels, scores)
    # A score of exactly 1.0 belongs to the last bin, not an extra one.
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    table = []
    for position in range(bins):
        chosen = index == position
        if chosen.any():
            table.append({"low": position / bins, "high": (position + 1) / bins, "count": int(chosen.sum()),
                          "mean_score": float(scores[chosen].mean()), "fraction_fake": float(labels[chosen].mean())})
    return table


def expected_calibration_error(labels, scores, bins: int = ECE_BINS) -> float:
    """Sum over bins of (bin share of examples) * |fraction fake - mean P(fake)|."""
    labels, _ = _arrays(labels, scores)
    return float(sum(row["count"] * abs(row["fraction_fake"] - row["mean_score"])
                     for row in bin_table(labels, scores, bins)) / labels.size)


def brier_score(labels, scores) -> float:
    labels, scores = _arrays(labels, scores)
    return float(np.mean((scores - labels) ** 2))


def calibration_metrics(labels, scores, bins: int = ECE_BINS) -> dict:
    return {"ece": expected_calibration_error(labels, scores, bins), "ece_bins": bins,
            "brier": brier_score(labels, scores), "reliability": bin_table(labels, scores, bins)}


def reliability_figure(labels, scores, title: str = "Reliability", bins: int = ECE_BINS, extra: dict | None = None):
    """Fraction fake against mean P(fake) per bin (the diagonal is perfect calibration), with a count histogram.

    `extra` maps a label to other scores of the same examples (e.g. after temperature scaling), drawn too.
    """
    from dfd.evaluation.plots import plt  # pyplot through plots, which sets the Agg backend first

    figure, (axes, counts) = plt.subplots(2, 1, figsize=(4.2, 4.8), dpi=100, sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    for name, values in {"model": scores, **(extra or {})}.items():
        table = bin_table(labels, values, bins)
        ece = expected_calibration_error(labels, values, bins)
        axes.plot([row["mean_score"] for row in table], [row["fraction_fake"] for row in table], "o-",
                  label=f"{name} (ECE {ece:.3f})")
    axes.set(ylabel="fraction fake", xlim=(0, 1), ylim=(0, 1.01), title=title)
    axes.legend(loc="upper left", fontsize=8)
    counts.hist(np.asarray(scores).reshape(-1), bins=np.linspace(0, 1, bins + 1), color="tab:blue")
    counts.set(xlabel="P(fake)", ylabel="examples")
    figure.tight_layout()
    return figure


def _clip_scores(frame_logits: np.ndarray, starts: np.ndarray, sizes: np.ndarray, temperature: float,
                 aggregate: str) -> np.ndarray:
    frames = 1.0 / (1.0 + np.exp(-frame_logits / temperature))
    if aggregate == "mean":
        return np.add.reduceat(frames, starts) / sizes
    if aggregate == "max":
        return np.maximum.reduceat(frames, starts)
    return np.array([np.median(frames[start:start + size]) for start, size in zip(starts, sizes, strict=True)])


def fit_temperature(labels, frame_scores, aggregate: str = "mean") -> float:
    """The temperature minimising the negative log-likelihood of the labels (deterministic, bounded search).

    frame_scores: one array of raw model outputs per example (a single value for a video model or an image;
    an image model's frame scores of a video, which are calibrated one by one and then aggregated).
    """
    from scipy import optimize  # a scikit-learn dependency, so always installed

    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    frame_scores = [np.asarray(scores, dtype=np.float64).reshape(-1) for scores in frame_scores]
    if len(frame_scores) != labels.size or labels.size == 0:
        raise ValueError(f"need one set of frame scores per label, got {len(frame_scores)} for {labels.size}")
    if len(np.unique(labels)) < 2:
        raise ValueError("temperature scaling needs validation data with both real and fake examples")
    sizes = np.array([scores.size for scores in frame_scores])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    frame_logits = logit(np.concatenate(frame_scores))

    def negative_log_likelihood(log_temperature: float) -> float:
        clip = np.clip(_clip_scores(frame_logits, starts, sizes, np.exp(log_temperature), aggregate),
                       EPSILON, 1.0 - EPSILON)
        return float(-np.mean(labels * np.log(clip) + (1.0 - labels) * np.log1p(-clip)))

    found = optimize.minimize_scalar(negative_log_likelihood, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded",
                                     options={"xatol": 1e-5})
    return float(np.exp(found.x))


def read_calibration(directory: str | Path) -> tuple[float, str | None]:
    """(temperature, description) from directory/calibration.json; (1.0, None) without one."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return 1.0, None
    values = json.loads(path.read_text())
    temperature = float(values["temperature"])
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{path} holds temperature {temperature}; it must be > 0. Run dfd.evaluate --calibrate "
                         "again or delete the file")
    return temperature, f"temperature {temperature:.4f} from {path}"


def write_calibration(directory: str | Path, temperature: float, fitted_on: str, aggregate: str | None,
                      before: dict, after: dict) -> Path:
    path = Path(directory) / CALIBRATION_FILE
    write_json(path, {"method": "temperature", "temperature": temperature, "fitted_on": fitted_on,
                      "aggregate": aggregate, "val_before": before, "val_after": after})
    return path


def example_frame_scores(scored: dict) -> list[np.ndarray]:
    """One array of raw scores per example of dfd.evaluation.evaluate.score_split's result."""
    if "frame_scores" in scored:
        return [np.asarray(scored["frame_scores"][source]) for source in scored["sources"]]
    return [np.asarray([score]) for score in scored["scores"]]


def calibrated(scored: dict, temperature: float, aggregate: str) -> dict:
    """score_split's result as if scored with `temperature`: frames scaled first, then aggregated."""
    from dfd.evaluation import metrics

    result = dict(scored)
    if "frame_scores" not in scored:
        result["scores"] = apply_temperature(scored["scores"], temperature)
        return result
    result["frame_scores"] = {source: apply_temperature(values, temperature).tolist()
                              for source, values in scored["frame_scores"].items()}
    result["scores"] = np.array([metrics.aggregate_scores(result["frame_scores"][source],
                                                          [0] * len(result["frame_scores"][source]), aggregate)[1][0]
                                 for source in scored["sources"]])
    return result


def summary(labels, scores, threshold: float) -> dict:
    """The numbers compared before and after temperature scaling."""
    from dfd.evaluation import metrics

    computed = metrics.compute_metrics(labels, scores, threshold)
    return {"loss": computed["loss"], "ece": expected_calibration_error(labels, scores),
            "brier": brier_score(labels, scores), "accuracy": computed["accuracy"], "roc_auc": computed["roc_auc"],
            "threshold": float(threshold)}
