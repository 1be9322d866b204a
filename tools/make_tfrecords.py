"""Converts an image or video dataset into verified, sharded TFRecords.

    python tools/make_tfrecords.py --source=DIR --output=DIR [--flags]

Layouts: <split>/<class>/<files> folders (train/val/valid/validation/test,
real/fake, any case), a CSV manifest (--manifest), DFDC (metadata.json) and
FaceForensics++ (original_sequences/ vs manipulated_sequences/). Writes
<split>-NNNNN-of-MMMMM.tfrecord shards, metadata.json and skipped.csv under
--output. Re-running the same command after an interruption finishes the job.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402  (TensorFlow-free: worker processes re-import this file)

from dfd import cli  # noqa: E402


def define_flags(flag_values=None) -> None:
    """Every flag from dfd.convert.config.ConvertConfig, where each option, its default and help live."""
    from dfd import settings
    from dfd.convert.config import ConvertConfig  # imports TensorFlow (PreprocessSpec's encodings)

    settings.define_flags(ConvertConfig, flag_values)


def main(argv) -> int:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    from dfd import settings
    from dfd.convert.convert import ConvertConfig, TooManySkipsError, convert  # imports TF: not at module level

    config = settings.from_flags(ConvertConfig, flags.FLAGS)
    try:
        summary = convert(config)
    except TooManySkipsError as error:   # a ValueError (cli.run reports it), after the counts
        print(error.summary.line(), flush=True)
        raise
    print(summary.line())
    return 0


if __name__ == "__main__":
    cli.quiet_tensorflow()   # before define_flags, which imports TensorFlow
    define_flags()
    cli.run(main, "make_tfrecords")
