"""What every dfd command does first: quiet TensorFlow start-up, and one way to report a user error.

    from dfd import cli
    ...
    if __name__ == "__main__":
        define_flags()
        cli.run(main, "dfd.evaluate")

`run` selects the Keras backend (--backend or KERAS_BACKEND, dfd.backend.select: before Keras is
imported, so `quiet_tensorflow`, which entry points call before their imports, does it too), parses the
flags, quiets TensorFlow's start-up logging (unless DFD_TF_LOGS=1) and runs `main` under absl's app.run.
Every user error leaves the same way, as one line on stderr, `NAME: message`, with exit code 2
(USER_ERROR_EXIT) and no traceback: a flag absl cannot parse (unknown, malformed, out of bounds, a
required one missing), a ValueError from `main` (dfd's "user error": the message says what to do) and
an absl UsageError. What the machine or the user does to a running command leaves the same way: a full
disk (ENOSPC, from Python or TensorFlow) and a folder it may not write to (EACCES, EPERM, EROFS) as one
line with exit code 2, Ctrl-C (KeyboardInterrupt) as `NAME: interrupted` (training, tuning and conversion
add `; re-run the same command to resume`) with exit code 130 (128 + SIGINT, the shell's convention).
Anything else is a bug and keeps its traceback. Every entry point
(python -m dfd.{train,evaluate,predict,export,tune,serve,data_service,bench}, tools/*.py) ends in
`cli.run`; tests/test_cli.py runs each with a bad value.

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

import errno
import os
import re
import sys
import tempfile
from pathlib import Path

from dfd import backend, folders

SHOW_LOGS_ENV = "DFD_TF_LOGS"   # DFD_TF_LOGS=1: leave TensorFlow's logging as TensorFlow sets it
USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130   # 128 + SIGINT: what a shell reports for a command ended by Ctrl-C
# Commands whose re-run continues where an interrupted or failed one stopped (the run dir's backup,
# the conversion's complete shards); the others simply start again.
RESUMING_COMMANDS = frozenset({"dfd.train", "dfd.tune", "make_tfrecords"})

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


# False once a command takes --backend as its own flag (dfd.bench models times several backends, one process
# each): the backend then comes from KERAS_BACKEND alone.
_backend_from_argv = True


def select_backend(name: str | None = None) -> None:
    """Keras's backend from --backend (flagfiles included) or KERAS_BACKEND (dfd.backend.select), before
    Keras is imported; a bad value ends the command as a user error (one line, exit code 2)."""
    try:
        backend.select(sys.argv if _backend_from_argv else sys.argv[:1])
    except ValueError as error:
        sys.exit(_report(name or "dfd." + Path(sys.argv[0]).stem, error))


def quiet_tensorflow() -> None:
    """Selects the Keras backend (select_backend) and imports TensorFlow with its start-up lines held back
    (see the module docstring); idempotent.

    Call before anything imports TensorFlow or Keras; with DFD_TF_LOGS=1 TensorFlow's lines are shown. On
    the torch backend TensorFlow, which then only reads the input, is kept off the GPUs.
    """
    select_backend()
    if not show_tf_logs() and "tensorflow" not in sys.modules:
        try:
            _import_tensorflow_quietly()
        except KeyboardInterrupt:   # Ctrl-C during the seconds TensorFlow takes to load (at module level too)
            script = Path(sys.argv[0])   # dfd/train.py under python -m dfd.train, tools/make_tfrecords.py
            sys.exit(_interrupted(f"dfd.{script.stem}" if script.parent.name == "dfd" else script.stem))
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
        except BaseException as error:
            failed = not isinstance(error, KeyboardInterrupt)   # Ctrl-C: the start-up noise stays hidden
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


def _report(name: str, error: Exception) -> int:
    # One line whatever the message: absl indents multi-line flag errors, a wrapped message may hold "\n".
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    print(f"{name}: {message}", file=sys.stderr, flush=True)
    return USER_ERROR_EXIT


def _error_chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _disk_full(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain: an OSError from Python, one from h5py (no errno, the text only) or
    TensorFlow's RESOURCE_EXHAUSTED from its file writers (a Keras callback may have wrapped it)."""
    return any((isinstance(link, OSError) and link.errno == errno.ENOSPC) or "No space left on device" in str(link)
               for link in _error_chain(error))


def _disk_full_message(name: str, error: BaseException) -> str:
    paths = [link.filename for link in _error_chain(error) if isinstance(link, OSError) and link.filename]
    where = f" (writing {paths[0]})" if paths else ""
    then = "; it resumes where it stopped" if name in RESUMING_COMMANDS else ""
    return f"the disk is full{where}: free space there and re-run the same command{then}"


def _permission_message(error: OSError) -> str:
    path = Path(os.fsdecode(error.filename))
    if error.errno == errno.EROFS or not path.exists():   # a file or folder being created there
        return folders.not_writable_message(folders.existing_folder(path), error)
    return (f"{path}: {error.strerror or 'permission denied'}; check that this user may read it, and write to "
            "its folder where dfd writes")


def _interrupted(name: str) -> int:
    then = "; re-run the same command to resume" if name in RESUMING_COMMANDS else ""
    print(f"{name}: interrupted{then}", file=sys.stderr, flush=True)
    return INTERRUPTED_EXIT


def report_user_errors(main, name: str):
    """`main` with a user error (ValueError, absl UsageError or flag error), a full disk or a folder it may not
    write to turned into `name: message` on stderr and exit code 2, and Ctrl-C into one line and exit code 130."""
    from absl import app, flags

    def wrapped(argv):
        try:
            return main(argv)
        except flags.DuplicateFlagError:   # two definitions of one flag: dfd's bug, not the user's
            raise
        except (ValueError, app.UsageError, flags.Error) as error:   # flags.Error: a command's own FlagValues
            return _report(name, error)
        except KeyboardInterrupt:
            return _interrupted(name)
        except Exception as error:
            if _disk_full(error):
                return _report(name, ValueError(_disk_full_message(name, error)))
            if isinstance(error, OSError) and error.errno in folders.NOT_WRITABLE_ERRNOS and error.filename:
                return _report(name, ValueError(_permission_message(error)))
            raise

    return wrapped


def _flags_parser(name: str, parse: bool):
    from absl import flags

    def parser(argv):
        if not parse:   # the command parses its own flags (dfd.bench hands them to each benchmark)
            flags.FLAGS.mark_as_parsed()
            return argv
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(_report(name, error))

    return parser


def run(main, name: str, *, parse_flags: bool = True, quiet: bool = True, backend_flag: bool = True) -> None:
    """The entry point of command `name`: select the backend, parse flags, quiet TensorFlow, run main, report
    user errors.

    parse_flags=False leaves argv to `main` (absl's FLAGS stay empty). quiet=False leaves TensorFlow
    alone: for a command that never imports it, or whose TensorFlow warnings and errors are its log
    (the tf.data service servers). backend_flag=False: the command's --backend is its own (see
    _backend_from_argv).
    TensorFlow is imported after the flags are parsed, so a bad flag costs no TensorFlow start-up
    (entry points that import it at module level quiet it themselves, before that import).
    """
    from absl import app

    global _backend_from_argv
    _backend_from_argv = backend_flag
    select_backend(name)   # before anything imports Keras
    if backend_flag and parse_flags:
        backend.define_backend_flag()   # absl accepts --backend (select_backend has applied it) in every command

    def quiet_main(argv):
        if quiet:
            quiet_tensorflow()
        return main(argv)

    app.run(report_user_errors(quiet_main, name), flags_parser=_flags_parser(name, parse_flags))
