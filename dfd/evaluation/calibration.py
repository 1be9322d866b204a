"""How far a probability can be trusted: calibration error, Brier score, reliability diagram, temperature scaling.

    expected_calibration_error(labels, scores, bins=15) -> float   # ECE, equal-width bins on P(fake)
    brier_score(labels, scores) -> float                           # mean squared error of P(fake)
    calibration_metrics(labels, scores) -> dict                    # both, plus the per-bin table
    reliability_figure(labels, scores, title) -> matplotlib figure
    fit_temperature(labels, frame_scores, aggregate) -> float      # T minimising the val split's NLL
    decide_temperature(labels, frame_scores, aggregate) -> TemperatureDecision   # fit only where trusted
    apply_temperature(scores, temperature) -> scores               # sigmoid(logit(p) / T)
    read_calibration(directory) -> (temperature, source)           # calibration.json, or (1.0, why not)

Temperature scaling (Guo et al., 2017) divides the model's logit by one number T fitted on held-out data:
it changes how confident the probabilities are, never their order, so ROC AUC stays the same and a
threshold maps exactly (to_calibrated_threshold). T is applied to every model output (every frame of an
image model), so per-frame scores, their aggregate and the threshold all live on one scale.

A temperature fitted on a few, or perfectly separated, val examples makes unseen scores worse (the demo:
32 separated val clips, test log-loss 0.13 -> 0.25), so decide_temperature fits one only on enough val
examples that are not perfectly separated, and keeps it only when it lowers the log-loss of held-out
folds of the val split.
"""

from __future__ import annotations

import dataclasses
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
# A temperature is fitted only on at least this many val examples, and kept only when it lowers the
# log-loss of held-out folds (decide_temperature). Simulated (60 val draws each, test log-loss on 5,000
# more): at 30 examples the rule still kept temperatures that made an under-confident model (logits x0.6)
# worse on average (9 of 20 kept were worse, mean -0.005 nats); from 50 every miscalibrated case gained on
# average (x0.6: +0.007, x1.5: +0.005, x3: +0.20), and a calibrated model kept 17 of 60 fits at a mean cost
# of 0.007 nats, where fitting always cost 0.012 with 54 of 60 worse. Each of the 5 folds then holds 10.
MIN_CALIBRATION_EXAMPLES = 50
CALIBRATION_FOLDS = 5


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


class _ExampleLogits:
    """Every example's raw frame logits, flattened once: scored at any temperature without re-splitting."""

    def __init__(self, frame_scores):
        frame_scores = [np.asarray(scores, dtype=np.float64).reshape(-1) for scores in frame_scores]
        self.sizes = np.array([scores.size for scores in frame_scores])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.frame_logits = logit(np.concatenate(frame_scores))

    def scores(self, temperature: float, aggregate: str) -> np.ndarray:
        """One P(fake) per example: each frame scaled by `temperature`, then aggregated."""
        frames = 1.0 / (1.0 + np.exp(-self.frame_logits / temperature))
        if aggregate == "mean":
            return np.add.reduceat(frames, self.starts) / self.sizes
        if aggregate == "max":
            return np.maximum.reduceat(frames, self.starts)
        return np.array([np.median(frames[start:start + size])
                         for start, size in zip(self.starts, self.sizes, strict=True)])


def _negative_log_likelihood(labels: np.ndarray, scores: np.ndarray) -> float:
    clipped = np.clip(scores, EPSILON, 1.0 - EPSILON)
    return float(-np.mean(labels * np.log(clipped) + (1.0 - labels) * np.log1p(-clipped)))


def _checked(labels, frame_scores) -> tuple[np.ndarray, list]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    frame_scores = list(frame_scores)
    if len(frame_scores) != labels.size or labels.size == 0:
        raise ValueError(f"need one set of frame scores per label, got {len(frame_scores)} for {labels.size}")
    return labels, frame_scores


def fit_temperature(labels, frame_scores, aggregate: str = "mean") -> float:
    """The temperature minimising the negative log-likelihood of the labels (deterministic, bounded search).

    frame_scores: one array of raw model outputs per example (a single value for a video model or an image;
    an image model's frame scores of a video, which are calibrated one by one and then aggregated).
    """
    from scipy import optimize  # a scikit-learn dependency, so always installed

    labels, frame_scores = _checked(labels, frame_scores)
    if len(np.unique(labels)) < 2:
        raise ValueError("temperature scaling needs validation data with both real and fake examples")
    examples = _ExampleLogits(frame_scores)

    def negative_log_likelihood(log_temperature: float) -> float:
        return _negative_log_likelihood(labels, examples.scores(np.exp(log_temperature), aggregate))

    found = optimize.minimize_scalar(negative_log_likelihood, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded",
                                     options={"xatol": 1e-5})
    return float(np.exp(found.x))


@dataclasses.dataclass(frozen=True)
class TemperatureDecision:
    """decide_temperature's answer: whether a temperature is kept, which one, and why (one line)."""
    kept: bool
    temperature: float                  # fitted on every val example when kept; 1.0 (raw outputs) otherwise
    reason: str
    folds: int = 0                      # cross-validation folds behind the two losses (0: not cross-validated)
    held_out_loss_raw: float | None = None      # mean held-out log-loss at T = 1
    held_out_loss_fitted: float | None = None   # the same with T fitted on the other folds

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def _why_untrusted(labels: np.ndarray, examples: _ExampleLogits, aggregate: str, folds: int,
                   min_examples: int) -> str | None:
    """Why a temperature fitted on these val examples cannot be trusted, or None."""
    real, fake = int((labels == 0).sum()), int((labels == 1).sum())
    if labels.size < min_examples or min(real, fake) < folds:
        return (f"the val split has {labels.size} examples ({real} real, {fake} fake); a temperature is fitted "
                f"only on at least {min_examples} with at least {folds} of each class")
    scores = examples.scores(1.0, aggregate)
    if scores[labels == 0].max() < scores[labels == 1].min():
        # Every T < 1 lowers a separated split's loss further, so the fit runs to the bound (0.02): it says
        # how separable the val split is, not how confident the model should be on new data.
        return "the val split is perfectly separated, so its log-loss falls without end as T shrinks"
    return None


def cross_validated_losses(labels, frame_scores, aggregate: str = "mean",
                           folds: int = CALIBRATION_FOLDS) -> tuple[float, float]:
    """(held-out log-loss at T = 1, held-out log-loss with T fitted on the other folds), over stratified
    folds (fixed seed: deterministic), each fold's loss weighted by its examples."""
    from sklearn.model_selection import StratifiedKFold

    labels, frame_scores = _checked(labels, frame_scores)
    raw_total = fitted_total = 0.0
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for fit_rows, held_rows in splitter.split(np.zeros(labels.size), labels):
        temperature = fit_temperature(labels[fit_rows], [frame_scores[row] for row in fit_rows], aggregate)
        held_out = _ExampleLogits([frame_scores[row] for row in held_rows])
        raw_total += held_rows.size * _negative_log_likelihood(labels[held_rows], held_out.scores(1.0, aggregate))
        fitted_total += held_rows.size * _negative_log_likelihood(labels[held_rows],
                                                                  held_out.scores(temperature, aggregate))
    return raw_total / labels.size, fitted_total / labels.size


def decide_temperature(labels, frame_scores, aggregate: str = "mean", folds: int = CALIBRATION_FOLDS,
                       min_examples: int = MIN_CALIBRATION_EXAMPLES) -> TemperatureDecision:
    """A temperature only where it can be trusted and helps: enough val examples of both classes, not
    perfectly separated, and a lower held-out log-loss in `folds`-fold cross-validation than T = 1."""
    labels, frame_scores = _checked(labels, frame_scores)
    refusal = _why_untrusted(labels, _ExampleLogits(frame_scores), aggregate, folds, min_examples)
    if refusal is not None:
        return TemperatureDecision(False, 1.0, refusal)
    raw, fitted = cross_validated_losses(labels, frame_scores, aggregate, folds)
    losses = dict(folds=folds, held_out_loss_raw=raw, held_out_loss_fitted=fitted)
    if fitted >= raw:
        return TemperatureDecision(False, 1.0, f"a fitted temperature does not lower the held-out log-loss "
                                   f"({folds}-fold cross-validation on the val split: {fitted:.4f}, against "
                                   f"{raw:.4f} uncalibrated)", **losses)
    temperature = fit_temperature(labels, frame_scores, aggregate)
    return TemperatureDecision(True, temperature, f"it lowers the held-out log-loss from {raw:.4f} to "
                               f"{fitted:.4f} ({folds}-fold cross-validation on the val split)", **losses)


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
                      before: dict, after: dict, cross_validation: dict | None = None) -> Path:
    path = Path(directory) / CALIBRATION_FILE
    values = {"method": "temperature", "temperature": temperature, "fitted_on": fitted_on,
              "aggregate": aggregate, "val_before": before, "val_after": after}
    if cross_validation is not None:
        values["cross_validation"] = cross_validation
    write_json(path, values)
    return path


def example_frame_scores(scored) -> list[np.ndarray]:
    """One array of scores per example of a dfd.evaluation.evaluate.Scored (score_split's result)."""
    if scored.frame_scores is not None:
        return [np.asarray(scored.frame_scores[source]) for source in scored.sources]
    return [np.asarray([score]) for score in scored.scores]


def calibrated(scored, temperature: float, aggregate: str):
    """A Scored (score_split's result) rescaled by `temperature` (relative to its own scores): frames scaled
    first, then aggregated."""
    from dfd.evaluation import metrics

    if scored.frame_scores is None:
        return dataclasses.replace(scored, scores=apply_temperature(scored.scores, temperature))
    frame_scores = {source: apply_temperature(values, temperature).tolist()
                    for source, values in scored.frame_scores.items()}
    scores = np.array([metrics.aggregate_scores(frame_scores[source], [0] * len(frame_scores[source]), aggregate)[1][0]
                       for source in scored.sources])
    return dataclasses.replace(scored, scores=scores, frame_scores=frame_scores)


def summary(labels, scores, threshold: float) -> dict:
    """The numbers compared before and after temperature scaling."""
    from dfd.evaluation import metrics

    computed = metrics.compute_metrics(labels, scores, threshold)
    return {"loss": computed["loss"], "ece": expected_calibration_error(labels, scores),
            "brier": brier_score(labels, scores), "accuracy": computed["accuracy"], "roc_auc": computed["roc_auc"],
            "threshold": float(threshold)}
