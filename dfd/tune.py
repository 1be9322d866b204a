"""Searches simplified model variants with keras-tuner: `python -m dfd.tune --flagfile=configs/tune_video.flags`.

The training flags (dfd.train_flags) and the tune flags (dfd.tuning.flags) are one set, so a tune flagfile
includes a training flagfile (--flagfile=configs/video.flags) and overrides what differs. Re-running
the same command resumes the search; --overwrite starts over. At the end: a ranked table (also
<run_dir>/tuner/trials.csv), <run_dir>/best.flags for dfd.train, and with --retrain_best a full-length
training of the winner into <run_dir>/best. Everything happens in dfd.tuning.search.run_search.
"""

from __future__ import annotations

from absl import app, flags

from dfd import train_flags
from dfd.tuning import flags as tune_flags


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        config = train_flags.config_from_flags(flags.FLAGS)
        options = tune_flags.options_from_flags(flags.FLAGS)
    except ValueError as error:   # bad flag values: say what to fix, without a traceback
        raise app.UsageError(str(error)) from None
    from dfd.tuning.search import SearchSettingsError
    try:
        tune(config, options)
    except SearchSettingsError as error:
        raise app.UsageError(str(error)) from None


def tune(config, options) -> None:
    """The search, then (--retrain_best) the winner at full length."""
    import keras

    from dfd import train
    from dfd.tuning.search import run_search

    result = run_search(config, options)
    if options.retrain_best:
        if result.best_config is None:
            raise app.UsageError("--retrain_best: the search has no accepted trial to retrain (see above)")
        keras.backend.clear_session()   # the last trial's model is no longer needed
        print(f"dfd.tune: retraining the best trial for {result.best_config.epochs} epochs into "
              f"{result.best_config.run_dir}")
        train.train(result.best_config)


if __name__ == "__main__":
    tune_flags.define_tune_flags()
    app.run(main)
