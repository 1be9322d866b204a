"""keras-tuner tuners that record what dfd needs per trial and print progress.

Hyperband, BayesianOptimization and RandomSearch are used as keras-tuner ships them (their oracles
decide which trial runs next); the TrialRecording mixin adds, for all three:
- per trial, the train-validation gaps and parameter counts as trial metrics (trial.json), averaged
  over executions;
- --max_gap: a trial whose AUC gap exceeds it is rejected (objectives.apply_max_gap: it reports the
  objective's worst value to the oracle);
- a TensorBoard HParams session per trial (board.py) and a progress line per trial.
"""

from __future__ import annotations

import time

import keras_tuner
import psutil

from dfd.tuning.board import HParamsBoard, searched_values
from dfd.tuning.objectives import DIRECTIONS, apply_max_gap, measured, trial_metrics
from dfd.tuning.results import ranked_rows


def scheduled_trials(oracle) -> int | None:
    """Trials the search will run: --max_trials, or Hyperband's schedule (one iteration) capped by it."""
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle):
        try:   # the oracle's own schedule: private methods of keras-tuner 1.4
            total = sum(oracle._get_size(bracket, round_number)
                        for bracket in range(oracle._get_num_brackets())
                        for round_number in range(oracle._get_num_rounds(bracket)))
        except AttributeError:   # another keras-tuner version: progress shows "of ?" or the cap
            return oracle.max_trials
        return min(total, oracle.max_trials) if oracle.max_trials else total
    return oracle.max_trials


class TrialRecording:
    """Mixin over a keras-tuner Tuner (see the module docstring)."""

    def __init__(self, *args, board: HParamsBoard, max_gap: float | None = None, **kwargs):
        self.board = board
        self.max_gap = max_gap
        self._started = {}
        super().__init__(*args, **kwargs)

    def _populate_initial_space(self):
        # keras-tuner builds models until every conditional hparam has been seen; define_search_space
        # registers all of them in one call, so declaring is enough (and skips building InceptionV3s
        # just to list hparams).
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # Only the log folder: keras-tuner would also add its own HParams callback per execution,
        # a second session next to the one board.py writes with the gaps and parameter counts.
        for callback in callbacks:
            if callback.__class__.__name__ == "TensorBoard":
                callback.log_dir = str(self.board.trial_dir(trial.trial_id) / f"execution{execution}")

    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)   # one metrics dict per execution
        averaged = {name: sum(result[name] for result in results) / len(results) for name in results[0]}
        return apply_max_gap(averaged, self.oracle.objective.name, self.max_gap)

    def on_search_begin(self):
        super().on_search_begin()
        self.oracle.verbose = 0   # keras-tuner's own per-trial display; the lines below replace it

    def _progress(self) -> str:
        total = scheduled_trials(self.oracle)
        return f"trial {len(self.oracle.trials)} of {total if total else '?'}"

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._started[trial.trial_id] = time.perf_counter()
        self.board.clear_trial(trial.trial_id)
        values = ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                           for name, value in searched_values(trial.hyperparameters).items())
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        more = f", epochs {trial.hyperparameters.values.get('tuner/initial_epoch')}->{epochs}" if epochs else ""
        print(f"dfd.tune: {self._progress()} (id {trial.trial_id}{more}): {values}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)   # the oracle scores and saves the trial
        trial = self.oracle.get_trial(trial.trial_id)
        metrics = trial_metrics(trial)
        if trial.score is not None and trial.status == "COMPLETED":
            metrics["score"] = float(trial.score)
        self.board.write_trial(trial.trial_id, searched_values(trial.hyperparameters), metrics)
        seconds = time.perf_counter() - self._started.pop(trial.trial_id, time.perf_counter())
        objective = self.oracle.objective.name
        memory = psutil.Process().memory_info().rss / 2 ** 30
        if trial.status == "COMPLETED":
            outcome = (f"{objective} {measured(metrics, objective):.4f}, auc gap {metrics['auc_gap']:+.3f}, "
                       f"loss gap {metrics['loss_gap']:+.3f}, {int(metrics['params']):,} params")
            if metrics.get("rejected"):
                outcome += f" - rejected: auc gap above --max_gap={self.max_gap}"
        else:
            last_line = (trial.message or "").strip().splitlines()[-1:] or [""]
            outcome = f"{trial.status.lower()}: {last_line[0]}"
        print(f"dfd.tune: {self._progress()} (id {trial.trial_id}) done in {seconds:.0f} s: {outcome}; "
              f"{self._best_so_far()}; host memory {memory:.2f} GiB", flush=True)

    def _best_so_far(self) -> str:
        objective = self.oracle.objective.name
        rows = ranked_rows(self.oracle.trials.values(), objective)   # the final table's order, ties included
        if not rows or rows[0]["status"] != "ok":
            return "no accepted trial yet"
        return f"best so far: trial {rows[0]['trial_id']}, {objective} {rows[0]['objective']:.4f}"


class HyperbandTuner(TrialRecording, keras_tuner.Hyperband):
    pass


class BayesianTuner(TrialRecording, keras_tuner.BayesianOptimization):
    pass


class RandomTuner(TrialRecording, keras_tuner.RandomSearch):
    pass


def make_tuner(name: str, hypermodel, *, objective: str, max_trials: int, max_epochs: int,
               hyperband_factor: int, executions_per_trial: int, seed: int, directory, project_name: str,
               overwrite: bool, board: HParamsBoard, max_gap: float | None, distribution_strategy=None):
    """The keras-tuner tuner `name` (hyperband | bayesian | random) over `hypermodel`.

    Its files go to directory/project_name; with overwrite=False an existing search there is reloaded
    and continues where it stopped (finished trials are not run again).
    """
    common = dict(hypermodel=hypermodel, objective=keras_tuner.Objective(objective, DIRECTIONS[objective]),
                  executions_per_trial=executions_per_trial, seed=seed, directory=str(directory),
                  project_name=project_name, overwrite=overwrite, board=board, max_gap=max_gap,
                  distribution_strategy=distribution_strategy)
    if name == "hyperband":
        tuner = HyperbandTuner(max_epochs=max_epochs, factor=hyperband_factor, **common)
        # Hyperband's schedule sets the number of trials; --max_trials caps it (0: no cap).
        tuner.oracle.max_trials = max_trials or None
        return tuner
    if name == "bayesian":
        return BayesianTuner(max_trials=max_trials, **common)
    if name == "random":
        return RandomTuner(max_trials=max_trials, **common)
    raise ValueError(f"--tuner must be hyperband, bayesian or random, got {name!r}")


