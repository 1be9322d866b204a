"""`python -m dfd.evaluate --run_dir=runs/X [--split=test] [--data=DIR] [--threshold=...] [--aggregate=...]`.

Scores a split with the run's best model, prints a report and writes metrics,
plots and predictions under runs/X/eval/<split>/ (see dfd.evaluation.evaluate).
"""

from __future__ import annotations

from absl import flags

from dfd import cli

if __name__ == "__main__":   # before dfd.evaluation imports TensorFlow
    cli.quiet_tensorflow()

from dfd.evaluation import metrics  # noqa: E402


def define_flags() -> None:
    # Defined in a function, not at import: tests import this module without parsing flags.
    flags.DEFINE_string("run_dir", None, "Run directory written by the trainer.", required=True)
    flags.DEFINE_string("split", "test", "Split to evaluate (train, val or test).")
    flags.DEFINE_string("data", None, "TFRecord folder to evaluate; default: the run's training data. "
                        "Must be converted with the run's preprocessing.")
    flags.DEFINE_enum("threshold", "0.5", list(metrics.THRESHOLD_METHODS),
                      "Decision threshold: fixed 0.5, or chosen on the val split (equal error rate or Youden's J).")
    flags.DEFINE_enum("aggregate", "mean", list(metrics.AGGREGATE_METHODS),
                      "Image model on video records: how frame scores become a video score.")
    flags.DEFINE_integer("batch_size", 64, "Records per inference batch.")


def main(argv) -> int:
    del argv
    from dfd.evaluation.evaluate import evaluate  # after flag parsing: TensorFlow import is slow

    values = flags.FLAGS
    evaluate(values.run_dir, values.split, values.data, values.threshold, values.aggregate, values.batch_size)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, "dfd.evaluate")
