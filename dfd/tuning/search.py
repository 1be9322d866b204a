"""run_search(config, options): the whole search, importable (dfd.tune's main only parses flags).

Run dir (dfd.run_layout.RunLayout):
    flags.txt       the resolved tune flags: `python -m dfd.tune --flagfile=flags.txt` resumes the search
    tuner/          keras-tuner's project (oracle.json, trial_<id>/trial.json + checkpoint) and
                    search.json (what the search is; a re-run with other settings is refused),
                    trials.csv (the ranked table)
    tb/             TensorBoard: HParams dashboard, one session per trial (tuning/board.py)
    best.flags      the winner's --model, hparams, --learning_rate and searched recipe values
                    (--input_size, --augment_*, --pseudo_fake_fraction) (tuning/results.py)
    best/           --retrain_best: a full dfd.train run of the winner
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import keras

from dfd import atomic_files, backend, train_flags
from dfd.atomic_files import write_json
from dfd.locks import folder_lock
from dfd.run_layout import RunLayout
from dfd.training import runtime
from dfd.training.setup import TrainingSetup
from dfd.tuning import flags as tune_flags
from dfd.tuning import results, search_space
from dfd.tuning.board import HParamsBoard
from dfd.tuning.hypermodel import DfdHyperModel
from dfd.tuning.objectives import DIRECTIONS
from dfd.tuning.tuners import make_tuner

PROJECT = "tuner"              # keras-tuner's project folder under the run dir (RunLayout.tuner)
BEST_FLAGS = "best.flags"
BEST_RUN = "best"


class SearchSettingsError(ValueError):
    """Settings a search cannot use (dfd.tune reports these without a traceback)."""


@dataclasses.dataclass
class SearchResult:
    rows: list                           # results.ranked_rows, best first
    best_config: train_flags.TrainConfig | None   # the winner at full length, run_dir <run_dir>/best
    best_flags: Path | None
    builds: int                          # models built in this call (0 when nothing was left to run)


def _search_identity(config, options, input_shape, recipe) -> dict:
    """What makes two runs the same search; anything else (--max_trials, --verbose...) may change on resume."""
    identity = {"model": config.model, "data": str(Path(config.data).resolve()), "input_shape": list(input_shape),
                # Only when given: searches from before --extra_train_data resume.
                **({"extra_train_data": [str(Path(directory).resolve()) for directory in config.extra_train_dirs]}
                   if config.extra_train_dirs else {}),
                "pinned_hparams": {name: str(value) for name, value in sorted(config.hparams.items())},
                "tuner": options.tuner, "objective": options.objective, "max_epochs": options.max_epochs,
                "hyperband_factor": options.hyperband_factor, "max_gap": options.max_gap}
    if recipe.identity():   # only then: a search without a recipe keeps the identity it always had
        identity["recipe"] = recipe.identity()
    return identity


class TrainingSets:
    """The training set of a trial, built through the trainer's TrainingSetup once per pseudo-fake fraction.

    Called with a TrainConfig: (repeating train dataset, steps per epoch, class weights). Every trial of
    a search shares the data, frame sampling and batch size; only --pseudo_fake_fraction changes the
    pipeline (the model, frame size and augmentation are layers of the model). With --cache=memory each
    fraction keeps its own cache.
    """

    def __init__(self, setup: TrainingSetup):
        self.setup = setup
        self._built = {}

    def __call__(self, config) -> tuple:
        key = config.pseudo_fake_fraction
        if key not in self._built:
            self._built[key] = (self.setup.training_data(config, self.setup.input_shape),
                                self.setup.class_weights(config))
        train_set, weights = self._built[key]
        return train_set.dataset, train_set.steps, weights

    def num_train(self, config) -> int:
        self(config)
        return self._built[config.pseudo_fake_fraction][0].num_records


def _check_same_search(path: Path, identity: dict, run_dir) -> None:
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    changed = [f"{key}: {previous.get(key)!r} -> {identity.get(key)!r}"
               for key in [*identity, *({"extra_train_data"} - set(identity))]
               if previous.get(key) != identity.get(key)]
    if changed:
        raise SearchSettingsError(f"{run_dir} holds a search with other settings ({'; '.join(changed)}). Re-run "
                                  "with the same flags to resume it, add --overwrite to start over, or use another "
                                  "--run_dir.")


def _start_over(layout: RunLayout) -> None:
    for folder in (layout.tuner, layout.tensorboard, layout.root / BEST_RUN):
        shutil.rmtree(folder, ignore_errors=True)
    (layout.root / BEST_FLAGS).unlink(missing_ok=True)


def _flags_text(config, options) -> str:
    training = [line for line in train_flags.flagfile_text(config).splitlines() if not line.startswith("#")]
    return "\n".join(["# Resolved flags of this search. Resume (or re-run) it with:",
                      "#   python -m dfd.tune --flagfile=THIS_FILE",
                      *training, *tune_flags.flag_lines(dataclasses.replace(options, overwrite=False,
                                                                            retrain_best=False))]) + "\n"


def run_search(config: train_flags.TrainConfig, options: tune_flags.TuneOptions) -> SearchResult:
    """Searches model variants of config.model on config.data; see the module docstring for the files."""
    backend.check_supported(config)   # what the torch backend cannot do (e.g. --strategy=mirrored)
    if config.strategy == "multi_worker":
        raise SearchSettingsError("dfd.tune runs on one machine (keras-tuner supports single-worker strategies only); "
                         "use --strategy=auto, one_device or mirrored")
    if config.warmup_epochs:
        raise SearchSettingsError("dfd.tune trains every trial in one phase: leave --warmup_epochs out of the search "
                                  "(search with --freeze_backbone or without), then train the best flags with it")
    layout = RunLayout(config.run_dir)
    try:
        setup = TrainingSetup.open(config)   # the trainer's checks of the data and the model kind
        recipe = search_space.make_recipe(
            config, setup.input_shape, model_names=options.search_models, input_sizes=options.search_input_sizes,
            augment_strengths=options.search_augment_strengths,
            pseudo_fake_fractions=options.search_pseudo_fake_fractions)
        for fraction in recipe.pseudo_fake_fractions or (config.pseudo_fake_fraction,):
            # Raises now, not in a trial, for a fraction leaving one class (e.g. 1.0 with --train_classes=real).
            setup.class_weights(dataclasses.replace(config, pseudo_fake_fraction=fraction))
    except ValueError as error:
        raise SearchSettingsError(str(error)) from None

    # One search per run dir; the lock is released when this process ends, however it ends.
    with folder_lock(layout.root, "tuning"):
        return _locked_search(config, options, layout, recipe, TrainingSets(setup))


def _locked_search(config, options, layout, recipe, training_sets) -> SearchResult:
    if options.overwrite:
        _start_over(layout)
    setup = training_sets.setup
    input_shape = setup.input_shape
    identity_file = layout.tuner / "search.json"
    identity = _search_identity(config, options, input_shape, recipe)
    _check_same_search(identity_file, identity, config.run_dir)

    strategy = runtime.make_strategy(config.strategy)
    precision = runtime.resolve_precision(config.precision)
    runtime.seed_everything(config.seed, config.deterministic)
    # Built once for all trials (once per pseudo-fake fraction when it is searched: TrainingSets).
    train_data, steps, weights = training_sets(config)
    num_train = training_sets.num_train(config)
    val_data, num_val = setup.validation_data(config, input_shape)

    hypermodel = DfdHyperModel(config, input_shape, precision, options.objective, recipe, training_sets)
    board = HParamsBoard(layout.tensorboard)
    tuner = make_tuner(
        options.tuner, hypermodel, objective=options.objective, max_trials=options.max_trials,
        max_epochs=options.max_epochs, hyperband_factor=options.hyperband_factor,
        executions_per_trial=options.executions_per_trial, seed=config.seed, directory=layout.root,
        project_name=PROJECT, overwrite=False, board=board, max_gap=options.max_gap,
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None)
    write_json(identity_file, identity)
    atomic_files.write_text(layout.flags, _flags_text(config, options))
    board.write_config(tuner.oracle.hyperparameters)

    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.TensorBoard(str(layout.tensorboard))]   # log_dir set per trial
    if config.data_service:
        from dfd import data_service
        callbacks.append(data_service.stall_watchdog(config.data_service, config.data_service_timeout_s))
    if options.trial_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=options.objective, mode=DIRECTIONS[options.objective], patience=options.trial_patience))
    finished = sum(trial.status in ("COMPLETED", "FAILED") for trial in tuner.oracle.trials.values())
    searched = ", ".join(f"{name} {','.join(map(str, values))}" for name, values in recipe.identity().items())
    print(f"dfd.tune: {options.tuner} search over {config.model} on {config.data} ({num_train} train / "
          f"{num_val} val clips of {input_shape}), objective {options.objective}, up to {options.max_epochs} "
          f"epochs per trial, precision {precision}, run dir {config.run_dir}"
          + (f"; recipe: {searched}" if searched else "")
          + (f"; resuming after {finished} finished trials" if finished else ""), flush=True)
    tuner.search(train_data, epochs=options.max_epochs, steps_per_epoch=steps, validation_data=val_data,
                 callbacks=callbacks, class_weight=weights, verbose=config.verbose, shuffle=False)
    return _finish(tuner, hypermodel, config, options, layout)


def _finish(tuner, hypermodel, config, options, layout) -> SearchResult:
    rows = results.ranked_rows(tuner.oracle.trials.values(), options.objective)
    print(f"dfd.tune: trials, best {options.objective} first (epochs: best/trained):")
    print(results.format_table(rows))
    results.write_csv(rows, layout.tuner / "trials.csv")
    print(f"dfd.tune: table saved to {layout.tuner / 'trials.csv'}; "
          f"TensorBoard: tensorboard --logdir {layout.tensorboard}")

    best_flags = layout.root / BEST_FLAGS
    if not rows or rows[0]["status"] != "ok":
        best_flags.unlink(missing_ok=True)
        reason = (" (every completed trial's train-validation AUC gap exceeds --max_gap: raise it, or pin "
                  "--dropout/--l2 higher)" if any(row["status"] == "rejected" for row in rows) else "")
        print(f"dfd.tune: no accepted trial, so no {BEST_FLAGS}{reason}")
        return SearchResult(rows, None, None, hypermodel.builds)
    best = tuner.oracle.get_trial(rows[0]["trial_id"])
    best_run_dir = str(layout.root / BEST_RUN)
    best_config = dataclasses.replace(hypermodel.trial_config(best.hyperparameters.copy()), run_dir=best_run_dir)
    atomic_files.write_text(best_flags, results.best_flags_text(best_config, rows[0], options.objective,
                                                  str(config.run_dir), best_run_dir, hypermodel.recipe.fields))
    print(f"dfd.tune: best trial {rows[0]['trial_id']} written to {best_flags}; retrain it at full length with\n"
          f"  python -m dfd.train --flagfile=TRAINING_FLAGFILE --flagfile={best_flags}\n"
          "or re-run this command with --retrain_best")
    return SearchResult(rows, best_config, best_flags, hypermodel.builds)


