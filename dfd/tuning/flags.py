"""Tuning flags, defined on top of the trainer's (dfd.train_flags) so a training flagfile can be included.

    define_tune_flags()                  # every training flag plus the search flags below
    options = options_from_flags(FLAGS)  # a plain TuneOptions

The --search_* flags add the training recipe to the space (dfd.tuning.search_space.make_recipe):
--search_models and --search_input_sizes when given; the augmentation strength when the training
flags turn on an --augment_* op, the pseudo-fake fraction with --pseudo_fakes (an empty list turns
either off).

The training flags keep their meaning: --data, --model, --batch_size, --precision... shape every
trial; hparam flags given there are pinned (not searched); --epochs and --patience apply only to
--retrain_best (the full-length retraining of the winner), trials use --max_epochs and --trial_patience.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from dfd import settings, train_flags
from dfd.settings import setting
from dfd.tuning import search_space
from dfd.tuning.objectives import DIRECTIONS

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVES = tuple(DIRECTIONS)


def define_tune_flags(flag_values=None) -> None:
    train_flags.define_all_flags(flag_values)
    settings.define_flags(TuneOptions, flag_values)


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """The search settings; the training settings stay in a TrainConfig."""

    tuner: str = setting("hyperband", "Search algorithm: hyperband (successive halving: many short trials, the best "
                         "trained longer), bayesian (Gaussian-process guided) or random.", choices=TUNERS)
    max_trials: int = setting(
        20, "Most trials (model configurations) in the search; raise it and re-run to extend a search. "
        "For hyperband a cap on its own schedule; 0 = no cap (hyperband only).")
    max_epochs: int = setting(10, "Most epochs one trial trains (hyperband: the epochs of its longest trials).")
    hyperband_factor: int = setting(
        3, "Hyperband's reduction factor: each round keeps 1/factor of the trials and trains them factor "
        "times longer.")
    executions_per_trial: int = setting(
        1, "Trainings from fresh weights per trial, averaged: >1 tells luck from architecture.")
    objective: str = setting("val_auc", "Trial score at its best epoch: val_auc (maximized) or val_loss (minimized).",
                             choices=OBJECTIVES)
    max_gap: float | None = setting(
        None, "Reject trials whose train-validation AUC gap (train AUC - val AUC at the best epoch) exceeds this, "
        "e.g. 0.05: they score the objective's worst value and never become best.flags. Unset: no limit.")
    trial_patience: int = setting(
        3, "EarlyStopping patience (epochs without a better objective) inside each trial; 0 turns it off.")
    search_models: tuple = setting(
        (), "Search the model too, among these (e.g. image_cnn,efficientnet_b0,xception), each with its own "
        "space; all of --model's kind (image models for frame-level training on video data). Empty: "
        "--model only.")
    search_input_sizes: tuple = setting(
        (), "Search the frame size the model sees (--input_size, resized on the accelerator), among these "
        "sizes in pixels, at most the data's (e.g. 64,96,128). Empty: --input_size only.")
    search_augment_strengths: tuple = setting(
        search_space.AUGMENT_STRENGTHS, "When the training flags turn on --augment_crop/color/brightness/contrast/"
        "blur/noise/cutout (their values are strength 1): search one factor scaling them all, among these. "
        "Empty: as given.")
    search_pseudo_fake_fractions: tuple = setting(
        search_space.PSEUDO_FAKE_FRACTIONS, "With --pseudo_fakes: search --pseudo_fake_fraction among these. "
        "Empty: as given.")
    overwrite: bool = setting(
        False, "Start over: delete the run dir's tuner/, tb/, best.flags and best/ first. Without it, re-running "
        "the same command resumes the search.")
    retrain_best: bool = setting(
        False, "After the search, train the best trial at full length (--epochs, --patience) into <run_dir>/best.")

    def __post_init__(self):
        for name, kind in (("search_models", str), ("search_input_sizes", int), ("search_augment_strengths", float),
                           ("search_pseudo_fake_fractions", float)):
            try:   # absl lists are strings: "64,96" -> (64, 96)
                object.__setattr__(self, name, tuple(kind(str(value).strip()) for value in getattr(self, name)))
            except ValueError:
                raise ValueError(f"--{name} must be a comma-separated list of {kind.__name__} values, "
                                 f"got {getattr(self, name)!r}") from None
        settings.check_choices(self)   # tuner, objective
        if self.max_trials < 0 or (self.max_trials == 0 and self.tuner != "hyperband"):
            raise ValueError(f"--max_trials must be >= 1 for the {self.tuner} tuner (0, no cap, only suits "
                             f"hyperband, whose schedule ends by itself), got {self.max_trials}")
        if self.max_epochs < 1 or self.executions_per_trial < 1 or self.trial_patience < 0:
            raise ValueError("--max_epochs and --executions_per_trial must be >= 1 and --trial_patience >= 0, "
                             f"got {self.max_epochs}, {self.executions_per_trial}, {self.trial_patience}")
        if self.hyperband_factor < 2:
            raise ValueError(f"--hyperband_factor must be >= 2, got {self.hyperband_factor}")
        if self.max_gap is not None and not 0 <= self.max_gap < float("inf"):   # NaN fails both
            raise ValueError(f"--max_gap must be >= 0 (an AUC difference, e.g. 0.05), got {self.max_gap}")


def options_from_flags(flag_values=None) -> TuneOptions:
    return settings.from_flags(TuneOptions, flag_values or flags.FLAGS)


def flag_lines(options: TuneOptions) -> list[str]:
    """The options as flagfile lines (unset --max_gap left out)."""
    return settings.flag_lines(options)
