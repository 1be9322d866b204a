"""`python -m dfd.evaluate --run_dir=runs/X [--split=test] [--data=DIR[,DIR2,...]] [--threshold=...]
    [--aggregate=...] [--calibrate] [--write_decisions] [--perturb=jpeg:90,70,50 ...] [--explain=N]`.

Scores a split with the run's best model, prints a report and writes metrics, plots and predictions
under runs/X/eval/<split>/ (other data: runs/X/eval/<name>/<split>/; see dfd.evaluation.evaluate).
Several --data folders make the cross-dataset table (dfd.evaluation.table): runs/X/eval/table.md, .json.
"""

from __future__ import annotations

from absl import flags

from dfd import backend, cli

if __name__ == "__main__":   # before dfd.evaluation imports TensorFlow
    cli.quiet_tensorflow()

from dfd.evaluation import metrics  # noqa: E402


def define_flags() -> None:
    # Defined in a function, not at import: tests import this module without parsing flags.
    flags.DEFINE_string("run_dir", None, "Run directory written by the trainer.", required=True)
    flags.DEFINE_string("split", "test", "Split to evaluate (train, val or test).")
    flags.DEFINE_string("data", None, "TFRecord folder to evaluate; default: the run's training data. "
                        "DIR1,DIR2,...: each folder's split, one table (eval/table.md, table.json). "
                        "Must be converted with the run's preprocessing.")
    flags.DEFINE_enum("threshold", "0.5", list(metrics.THRESHOLD_METHODS),
                      "Decision threshold: fixed 0.5, or chosen on the val split (equal error rate or Youden's J).")
    flags.DEFINE_enum("aggregate", "mean", list(metrics.AGGREGATE_METHODS),
                      "Image model on video records: how frame scores become a video score.")
    flags.DEFINE_integer("batch_size", 64, "Records per inference batch.")
    flags.DEFINE_bool("calibrate", False, "Fit temperature scaling on the val split (calibration.json beside "
                      "threshold.json); report the split's metrics before and after. dfd.predict, dfd.export and "
                      "dfd.serve then use calibrated probabilities. Fitted only on at least 50 val examples that "
                      "are not perfectly separated, and kept only when it lowers the held-out log-loss of 5-fold "
                      "cross-validation on the val split; otherwise nothing is written.")
    flags.DEFINE_bool("write_decisions", False, "Let --data other than the run's training data set the run's "
                      "threshold.json (--threshold) and calibration.json (--calibrate), which dfd.predict, "
                      "dfd.export and dfd.serve use. Without it, evaluating other data never changes them.")
    flags.DEFINE_multi_string("perturb", [], "Score the split again under a perturbation of the stored face crops, "
                              "NAME:LEVEL[,LEVEL...] (repeatable): jpeg:90,70,50 (quality), scale:0.5,0.25 (down "
                              "and back up), blur:1,2 (sigma, pixels), noise:5,10 (sigma, grey levels).")
    flags.DEFINE_integer("perturb_seed", 0, "Seed of the --perturb noise.")
    flags.DEFINE_integer("explain", 0, "Write Grad-CAM pictures (eval/<split>/explain/, TensorBoard) of the N most "
                         "confident mistakes and N most confident correct answers of each class.")


def main(argv) -> int:
    del argv
    from dfd.evaluation import table  # after flag parsing: TensorFlow import is slow

    values = flags.FLAGS
    backend.check_supported(values)   # --explain is TensorFlow's
    table.evaluate_datasets(values.run_dir, table.split_data_flag(values.data), values.split,
                            threshold_method=values.threshold, aggregate=values.aggregate,
                            batch_size=values.batch_size, calibrate=values.calibrate,
                            write_decisions=values.write_decisions, perturbations=values.perturb,
                            perturb_seed=values.perturb_seed, explain=values.explain)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, "dfd.evaluate")
