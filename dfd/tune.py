"""Searches simplified model variants with keras-tuner: `python -m dfd.tune --flagfile=configs/tune_video.flags`.

The training flags (dfd.train_flags) and the tune flags (dfd.tuning.flags) are one set, so a tune flagfile
includes a training flagfile (--flagfile=configs/video.flags) and overrides what differs. Re-running
the same command resumes the search; --overwrite starts over. At the end: a ranked table (also
<run_dir>/tuner/trials.csv), <run_dir>/best.flags for dfd.train, and with --retrain_best a full-length
training of the winner into <run_dir>/best. Everything happens in dfd.tuning.search.run_search.
"""

from __future__ import annotations

from absl import flags

from dfd import cli

if __name__ == "__main__":   # before dfd.models imports TensorFlow
    cli.quiet_tensorflow()

from dfd import train_flags  # noqa: E402
from dfd.tuning import flags as tune_flags  # noqa: E402


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    # Bad flag values and search settings are ValueErrors: cli.run reports them in one line.
    config = train_flags.config_from_flags(flags.FLAGS)   # run_search checks what the backend supports
    options = tune_flags.options_from_flags(flags.FLAGS)
    tune(config, options)


def tune(config, options) -> None:
    """The search, then (--retrain_best) the winner at full length."""
    import keras

    from dfd.training import run
    from dfd.tuning.search import run_search

    result = run_search(config, options)
    if options.retrain_best:
        if result.best_config is None:
            raise ValueError("--retrain_best: the search has no accepted trial to retrain (see above)")
        keras.backend.clear_session()   # the last trial's model is no longer needed
        print(f"dfd.tune: retraining the best trial for {result.best_config.epochs} epochs into "
              f"{result.best_config.run_dir}")
        # best/ belongs to the search: when a resumed search found another winner, its old training goes.
        run.train(result.best_config, overwrite=run.holds_another_run(result.best_config))


if __name__ == "__main__":
    tune_flags.define_tune_flags()
    cli.run(main, "dfd.tune")
