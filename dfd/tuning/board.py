"""TensorBoard's HParams dashboard for a search: one session per trial under <run_dir>/tb/.

    <run_dir>/tb/                          the experiment: hparams_config (search space + metrics), once
    <run_dir>/tb/trial_<id>/               a session: hparams(values, trial_id) + the trial's final metrics
    <run_dir>/tb/trial_<id>/execution<n>/  Keras's epoch curves (train/, validation/) of each execution

Metrics are written as scalars under tune/ at step = epochs trained; `tensorboard --logdir runs/NAME/tb`
then lists every trial in the HParams tab, sortable by val AUC, gaps and parameter count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

# (trial metric, scalar tag, description) shown as the dashboard's metric columns.
METRICS = (
    ("val_auc", "tune/val_auc", "Validation AUC at the best epoch"),
    ("val_loss", "tune/val_loss", "Validation loss at the best epoch"),
    ("auc_gap", "tune/auc_gap", "Train AUC - val AUC at the best epoch (overfitting)"),
    ("loss_gap", "tune/loss_gap", "Val loss - train loss at the best epoch (overfitting)"),
    ("params", "tune/params", "Parameters of the model"),
    ("score", "tune/score", "The objective as the tuner saw it (its worst value for rejected trials)"),
)


def _domain(hyperparameter):
    """A TensorBoard domain for a keras-tuner hyperparameter (Choice, Boolean, Int, Float, Fixed)."""
    kind = type(hyperparameter).__name__
    if kind == "Choice":
        return hparams_api.Discrete(list(hyperparameter.values))
    if kind == "Boolean":
        return hparams_api.Discrete([False, True])
    if kind == "Fixed":
        return hparams_api.Discrete([hyperparameter.value])
    if kind == "Int":
        return hparams_api.IntInterval(int(hyperparameter.min_value), int(hyperparameter.max_value))
    if kind == "Float":
        return hparams_api.RealInterval(float(hyperparameter.min_value), float(hyperparameter.max_value))
    return None


def searched_values(hyperparameters) -> dict:
    """A trial's active, searched values; Hyperband's bookkeeping (tuner/epochs...) left out."""
    return {name: value for name, value in hyperparameters.values.items() if not name.startswith("tuner/")}


class HParamsBoard:
    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)

    def trial_dir(self, trial_id: str) -> Path:
        return self.log_dir / f"trial_{trial_id}"

    def write_config(self, space) -> None:
        """The experiment summary: every hparam of `space` (keras_tuner.HyperParameters) and METRICS.

        Rewritten at each (re)start of the search so it matches the space; one file, not one per start.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("events.out.tfevents.*"):
            old.unlink()
        hparams = [hparams_api.HParam(hp.name, _domain(hp)) for hp in space.space if not hp.name.startswith("tuner/")]
        metrics = [hparams_api.Metric(tag, display_name=name, description=description)
                   for name, tag, description in METRICS]
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default():
            hparams_api.hparams_config(hparams=hparams, metrics=metrics)
        writer.close()

    def clear_trial(self, trial_id: str) -> None:
        """A trial that is run again (interrupted before) starts from empty logs."""
        shutil.rmtree(self.trial_dir(trial_id), ignore_errors=True)

    def write_trial(self, trial_id: str, values: dict, metrics: dict) -> None:
        """One session: the trial's hparam values and (if it completed) its metrics."""
        writer = tf.summary.create_file_writer(str(self.trial_dir(trial_id)))
        step = int(metrics.get("epochs", 0))
        with writer.as_default():
            hparams_api.hparams(values, trial_id=f"trial_{trial_id}")
            for name, tag, _ in METRICS:
                if name in metrics:
                    tf.summary.scalar(tag, metrics[name], step=step)
        writer.close()
