"""`python -m dfd.export --run_dir=runs/X --output=DIR`: a verified SavedModel for TF Serving.

`--format=onnx --output=FILE.onnx`: one verified ONNX file for onnxruntime. See dfd.evaluation.export and
dfd.evaluation.onnx_export.
"""

from __future__ import annotations

from absl import flags, logging

from dfd import cli


def define_flags() -> None:
    flags.DEFINE_string("run_dir", None, "Run directory written by the trainer.", required=True)
    flags.DEFINE_string("output", None, "New directory for the SavedModel and its companions (--format=onnx: "
                        "a new .onnx file).", required=True)
    flags.DEFINE_enum("format", "saved_model", ["saved_model", "onnx"],
                      "saved_model: TF Serving directory. onnx: one file with the threshold, calibration and "
                      "preprocessing in its metadata, for onnxruntime and dfd.predict --model=FILE.onnx.")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --output.")


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)  # SavedModel writing logs every signature detail at INFO
    from dfd.evaluation.export import export  # after flag parsing: TensorFlow import is slow

    export(flags.FLAGS.run_dir, flags.FLAGS.output, overwrite=flags.FLAGS.overwrite, export_format=flags.FLAGS.format)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, "dfd.export")
