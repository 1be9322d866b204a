"""What a search optimises: the objectives, their directions and worst values, and the --max_gap rule.

A trial reports the metrics of its best epoch (hypermodel.best_epoch_metrics). With --max_gap, a trial
whose train-validation AUC gap exceeds it is rejected: it reports the objective's worst value to the
oracle (val_auc 0, val_loss WORST_LOSS) and keeps its measured value as measured_<objective>, with
rejected=1. So Hyperband never promotes it to a longer round, Bayesian optimisation learns to avoid its
region, it never becomes best.flags, and the summary table lists it with status "rejected".

The tuners (tuners.py) apply the rule; the summary (results.py) ranks by it; neither imports the other.
"""

from __future__ import annotations

DIRECTIONS = {"val_auc": "max", "val_loss": "min"}

# Keras clips probabilities to [1e-7, 1 - 1e-7] in its cross-entropies, so no model's mean
# validation loss exceeds -ln(1e-7) = 16.12: the worst value of val_loss.
WORST_LOSS = 16.118095650958317
WORST = {"val_auc": 0.0, "val_loss": WORST_LOSS}


def best_index(values: list, objective: str) -> int:
    """The index of the best of `values` (an objective's per-epoch series): its first max or min."""
    pick = max if DIRECTIONS[objective] == "max" else min
    return values.index(pick(values))


def apply_max_gap(metrics: dict, objective: str, max_gap: float | None) -> dict:
    """metrics with `rejected` set, and the objective replaced by its worst value when auc_gap > max_gap."""
    metrics = dict(metrics)
    rejected = max_gap is not None and metrics["auc_gap"] > max_gap
    metrics["rejected"] = 1.0 if rejected else 0.0
    if rejected:
        metrics[f"measured_{objective}"] = metrics[objective]
        metrics[objective] = WORST[objective]
    return metrics


def measured(metrics: dict, name: str):
    """A trial's measured value of `name` (not the worst value a rejected trial reported)."""
    return metrics.get(f"measured_{name}", metrics.get(name))


def trial_metrics(trial) -> dict:
    """A keras-tuner trial's last value of each metric it recorded."""
    return {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
