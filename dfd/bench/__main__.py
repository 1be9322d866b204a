"""Dispatches `python -m dfd.bench NAME [--flags]` to `dfd.bench.NAME.main(argv)`.

Each benchmark module declares its flags as a `Settings` dataclass, parsed by its main with
`dfd.bench.parse` (`--help` lists them), and prints its headline ratio on its last line.
"""

import importlib
import pkgutil

import dfd.bench
from dfd import cli


def _available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(dfd.bench.__path__) if not m.name.startswith("_"))


def main(argv) -> None:
    names = _available()
    usage = f"usage: python -m dfd.bench {{{'|'.join(names)}}} [--flags]"
    if len(argv) >= 2 and argv[1] in ("-h", "--help"):
        print(usage)
        return
    if len(argv) < 2:
        raise ValueError(f"name a benchmark: {usage}")
    name = argv[1]
    if name not in names:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(names)}")
    cli.quiet_tensorflow()   # here, not in cli.run: a wrong name costs no TensorFlow start-up
    module = importlib.import_module(f"dfd.bench.{name}")
    module.main([f"dfd.bench {name}"] + argv[2:])


if __name__ == "__main__":
    # Each benchmark parses its own flags (a FlagValues of its own); a bad one is reported like a ValueError.
    # `models --backend=tensorflow,torch` is the benchmark's own flag: one process per backend.
    cli.run(main, "dfd.bench", parse_flags=False, quiet=False, backend_flag=False)
