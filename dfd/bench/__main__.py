"""Dispatches `python -m dfd.bench NAME [--flags]` to `dfd.bench.NAME.main(argv)`.

Each benchmark module owns its flags (defined in a function) and prints its
headline ratio on its last line.
"""

import importlib
import pkgutil
import sys

import dfd.bench
from dfd import cli


def _available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(dfd.bench.__path__) if not m.name.startswith("_"))


def main() -> None:
    names = _available()
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(f"usage: python -m dfd.bench {{{'|'.join(names)}}} [--flags]")
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    name = sys.argv[1]
    if name not in names:
        print(f"unknown benchmark {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    cli.quiet_tensorflow()   # TensorFlow's start-up lines held back (DFD_TF_LOGS=1 shows them)
    module = importlib.import_module(f"dfd.bench.{name}")
    module.main([f"dfd.bench {name}"] + sys.argv[2:])


if __name__ == "__main__":
    main()
