"""Trains a model on a dfd TFRecord folder: `python -m dfd.train --flagfile=configs/video.flags`.

Only parses flags: everything happens in dfd.training.run.train(config), which tests and dfd.tune call
directly (it is importable here too, as dfd.train.train). What the run dir receives, resuming, and
--overwrite: see dfd.training.run.
"""

from __future__ import annotations

from absl import flags

from dfd import cli

if __name__ == "__main__":   # before dfd.training imports TensorFlow
    cli.quiet_tensorflow()

from dfd import train_flags  # noqa: E402
from dfd.training.run import train  # noqa: E402


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    config = train_flags.config_from_flags(flags.FLAGS)   # a ValueError names the bad flag value
    train(config, overwrite=flags.FLAGS.overwrite)


if __name__ == "__main__":
    train_flags.define_all_flags()
    train_flags.define_overwrite_flag()
    cli.run(main, "dfd.train")
