"""Benchmarks: `python -m dfd.bench NAME [flags]`, one module per NAME in this package.

Every benchmark declares its flags once, as a `Settings` dataclass of `dfd.settings.setting` fields, and
its main starts the same way:

    def main(argv) -> None:
        values = bench.parse(Settings, argv)   # a Settings; --help prints the module docstring and the flags
        with bench.work_folder(values.workdir, "frames") as root:   # where a benchmark writes data
            ...

No TensorFlow here: the dispatcher imports this package before it decides whether TensorFlow is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

HELP = ("-h", "--help", "--helpfull")


def parse(cls, argv: list[str]):
    """An instance of the settings dataclass `cls` from argv (argv[0]: the program), parsed on a FlagValues of
    its own, never absl's FLAGS, so a benchmark can run twice in one process (tests do). With --help: the
    benchmark's docstring and flags on stdout, then exit 0. A bad flag raises absl's flags.Error, which
    dfd.cli reports as a user error."""
    from absl import flags

    from dfd import settings

    # Before any TensorFlow import (the benchmarks import it after parsing); the dispatcher's quiet import
    # has already set 3, and a benchmark's child processes inherit it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    flag_values = flags.FlagValues()
    settings.define_flags(cls, flag_values)
    if any(arg in HELP for arg in argv[1:]):
        # absl groups flags under the module that defined them (dfd.settings): keep the flags, not the header.
        lines = flag_values.get_help(include_special_flags=False).splitlines()
        print(f"usage: python -m {argv[0]} [--flags]\n\n{(sys.modules[cls.__module__].__doc__ or '').strip()}\n\n"
              "flags:\n" + "\n".join(line for line in lines if line.startswith(" ")))
        sys.exit(0)
    flag_values(argv)
    return settings.from_flags(cls, flag_values)


@contextlib.contextmanager
def work_folder(path: str | None, name: str) -> Iterator[Path]:
    """`path` when given (kept afterwards, for a look at the data), else a new temporary folder that is
    removed afterwards, whatever happens."""
    if path:
        yield Path(path)
        return
    root = Path(tempfile.mkdtemp(prefix=f"dfd-bench-{name}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
