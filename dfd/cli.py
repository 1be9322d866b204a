"""What every dfd command does first: quiet TensorFlow start-up, and one way to report a user error.

    from dfd import cli
    ...
    if __name__ == "__main__":
        define_flags()
        cli.run(main, "dfd.evaluate")

`run` selects the Keras backend (--backend or KERAS_BACKEND, dfd.backend.select: before Keras is imported,
so `quiet_tensorflow`, which entry points call before their imports, does it too), quiets TensorFlow's
start-up logging (unless DFD_TF_LOGS=1), runs `main` under absl's app.run,
and turns a ValueError (dfd's "user error": the message says what to do) into one line on stderr,
`dfd.NAME: message`, with exit code 2 and no traceback. Anything else is a bug and keeps its traceback.

Why the quieting takes two steps (measured with TensorFlow 2.21 on a CPU-only machine): every command
printed `E0000 ... failed call to cuInit: UNKNOWN ERROR (303)`, which a newcomer reads as a failure,
and TF_CPP_MIN_LOG_LEVEL=2 (the usual advice) does not hide it: it is logged at ERROR level. Level 3,
set before TensorFlow loads, hides it. Lines logged while TensorFlow's libraries load ("oneDNN custom
operations are on", "Could not find cuda drivers", "All log messages before absl::InitializeLog() is
called are written to STDERR") ignore every level and environment variable tried (TF_CPP_MIN_LOG_LEVEL,
GLOG_minloglevel, ABSL_MIN_LOG_LEVEL): they go straight to file descriptor 2 before absl logging is
initialised. So `import tensorflow` runs with descriptor 2 captured; afterwards the capture is replayed
except for those informational and warning start-up lines, and all of it is replayed if the import fails.
dfd's own messages are Python output and never pass through either filter.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from dfd import backend

SHOW_LOGS_ENV = "DFD_TF_LOGS"   # DFD_TF_LOGS=1: leave TensorFlow's logging as TensorFlow sets it
USER_ERROR_EXIT = 2

# An absl C++ log line ("I0000 00:00:1796220302.266074   11308 file.cc:31] ..."); the lines after it up to
# the next one continue its message. INFO and WARNING entries are start-up noise, and so is the banner
# absl writes before its logging is initialised.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^ \]]+:\d+\] ")
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"


def _without_startup_noise(lines: list[str]) -> list[str]:
    kept, noise = [], False
    for line in lines:
        entry = _LOG_LINE.match(line)
        if entry or line.startswith(_BANNER):
            noise = line.startswith(_BANNER) or entry.group(1) in "IW"
        if not noise:
            kept.append(line)
    return kept


def show_tf_logs() -> bool:
    return os.environ.get(SHOW_LOGS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def select_backend(name: str | None = None) -> None:
    """Keras's backend from --backend (flagfiles included) or KERAS_BACKEND (dfd.backend.select), before
    Keras is imported; a bad value ends the command as a user error (one line, exit code 2)."""
    try:
        backend.select(sys.argv)
    except ValueError as error:
        print(f"{name or 'dfd.' + Path(sys.argv[0]).stem}: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def quiet_tensorflow() -> None:
    """Selects the Keras backend (select_backend) and imports TensorFlow with its start-up lines held back
    (see the module docstring); idempotent.

    Call before anything imports TensorFlow or Keras; with DFD_TF_LOGS=1 TensorFlow's lines are shown. On
    the torch backend TensorFlow, which then only reads the input, is kept off the GPUs.
    """
    select_backend()
    if not show_tf_logs() and "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()
    if os.environ[backend.ENV] != "tensorflow":
        backend.hide_gpus_from_tensorflow()


def _import_tensorflow_quietly() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = lines if failed else _without_startup_noise(lines)
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def report_user_errors(main, name: str):
    """`main` with a ValueError turned into `name: message` on stderr and exit code 2."""

    def wrapped(argv):
        try:
            return main(argv)
        except ValueError as error:
            print(f"{name}: {error}", file=sys.stderr)
            return USER_ERROR_EXIT

    return wrapped


def run(main, name: str) -> None:
    """The entry point of command `name`: select the backend, quiet TensorFlow, parse flags, run main, report
    user errors."""
    from absl import app

    select_backend(name)
    quiet_tensorflow()
    app.run(report_user_errors(main, name))
