"""Which Keras backend runs the models: `--backend=tensorflow|torch` (or KERAS_BACKEND), and what each can do.

    backend.select(sys.argv)            # before anything imports Keras: sets KERAS_BACKEND (dfd.cli does it)
    backend.hide_gpus_from_tensorflow() # on torch, once TensorFlow is imported (dfd.cli does it)
    backend.define_backend_flag()       # so absl accepts --backend (dfd.cli.run defines it in every command)
    backend.check_supported(config)     # ValueError naming what the torch backend cannot do, and what to use

Keras reads KERAS_BACKEND once, when it is first imported, and dfd's entry points import it (through
dfd.models) at module level, before absl parses flags. So the flag is read from the command line by hand,
including the flagfiles it names (configs are flagfiles: `--flagfile=configs/video.flags --backend=torch`,
or a flagfile holding `--backend=torch`), the later value winning as in absl. Without the flag the
environment's KERAS_BACKEND is used, and without either, TensorFlow.

The input pipeline is tf.data on either backend: batches leave it as uint8 tensors and Keras hands them to
the torch model (fit, evaluate and predict convert each batch), so the model's first layers scale and
augment them on the accelerator as on TensorFlow. TensorFlow is then kept off the GPUs (hide_gpus_from_-
tensorflow): it only reads and decodes records, and would otherwise reserve most of each GPU's memory at
start-up, memory torch needs.

What the torch backend does not do (check_supported refuses it before any work, with what to use instead):
tf.distribute strategies (--strategy=mirrored, multi_worker: torch trains on one device here),
TensorBoard's profiler (--profile_batch: Keras has none on torch) and Grad-CAM (--explain: dfd's Grad-CAM
records gradients with TensorFlow's GradientTape). Everything else runs: mixed precision (Keras's
autocast and loss scaling are backend-independent), --jit_compile (torch.compile), --data_service (a
tf.data source like any other), class weights, every callback (TensorBoard's scalars are written with
tf.summary, which needs only TensorFlow installed), BackupAndRestore and resume, and .keras files, which
hold weights alone and load on either backend.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BACKENDS = ("tensorflow", "torch")
DEFAULT = "tensorflow"
ENV = "KERAS_BACKEND"
FLAG = "backend"


def _flag_values(argv: list[str], depth: int = 0) -> list[str]:
    """Every --backend value in argv, in order, with the flagfiles' own lines expanded where they are named."""
    if depth > 10:
        raise ValueError("--flagfile nesting deeper than 10 levels: does a flagfile include itself?")
    values = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--":
            break
        name, has_value, value = argument.lstrip("-").partition("=")
        if not argument.startswith("-") or name not in (FLAG, "flagfile"):
            continue
        if not has_value:   # "--backend torch": absl takes the next argument as the value
            value = next(arguments, "")
        if name == FLAG:
            values.append(value)
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            continue   # absl reports a missing flagfile itself, in its own words
        lines = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "//")):
                lines.append(line)   # absl: one flag per line, the value as written
        values += _flag_values(lines, depth + 1)
    return values


def requested(argv: list[str] | None = None) -> str:
    """The backend asked for: the last --backend in argv (flagfiles included), else KERAS_BACKEND, else TensorFlow."""
    values = _flag_values(list(sys.argv[1:] if argv is None else argv[1:]))
    name = values[-1] if values else os.environ.get(ENV, "") or DEFAULT
    if name not in BACKENDS:
        source = "--backend" if values else ENV
        raise ValueError(f"{source}={name!r} is not a backend dfd supports: use one of {', '.join(BACKENDS)}")
    return name


def select(argv: list[str] | None = None) -> str:
    """Sets KERAS_BACKEND to the requested backend (see requested); call before Keras is imported.

    Called again once Keras is loaded (dfd.cli calls it before the imports and again before main), it
    checks that the loaded Keras runs the requested backend.
    """
    name = requested(argv)
    if "keras" in sys.modules:
        loaded = sys.modules["keras"].backend.backend()
        if loaded != name:
            raise ValueError(f"Keras was already imported with the {loaded} backend, so --backend={name} cannot "
                             f"take effect: set it before anything imports keras (KERAS_BACKEND={name} in the "
                             "environment, or dfd.backend.select() first)")
    os.environ[ENV] = name
    return name


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow sees no GPU: on the torch backend it only runs the input pipeline (dfd.cli calls this
    after importing TensorFlow). A no-op once TensorFlow's runtime has started."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:   # the runtime is initialised: devices can no longer change
        pass


def current() -> str:
    """The backend of the loaded Keras (importing it)."""
    import keras

    return keras.backend.backend()


def define_backend_flag(flag_values=None) -> None:
    """--backend for absl. Its value is applied by select() before the flags are parsed; the flag makes absl
    accept it, and its default says what runs without it."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    if FLAG in flag_values:
        return
    default = os.environ.get(ENV) if os.environ.get(ENV) in BACKENDS else DEFAULT
    flags.DEFINE_enum(FLAG, default, list(BACKENDS),
                      "Keras backend for the models: tensorflow or torch (PyTorch). Default: $KERAS_BACKEND, else "
                      "tensorflow. Input pipelines are tf.data either way; .keras files load on both.",
                      flag_values=flag_values)


def gpu_available() -> bool:
    """True when the backend's framework sees a GPU (for --precision=auto)."""
    if current() == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def check_supported(config) -> None:
    """Refuses, on the torch backend, what only TensorFlow does: ValueError saying what to use instead.

    config: anything with some of the attributes strategy, profile_batch, explain (a TrainConfig,
    absl's FLAGS of dfd.evaluate or dfd.predict); missing ones are not checked.
    """
    name = current()
    if name == "tensorflow":
        return
    problems = []
    strategy = getattr(config, "strategy", "auto")
    if strategy in ("mirrored", "multi_worker"):
        problems.append(f"--strategy={strategy} is a tf.distribute strategy and the {name} backend trains on one "
                        "device: use --strategy=auto (one GPU), or --backend=tensorflow for several GPUs or workers")
    if str(getattr(config, "profile_batch", "0")).strip() not in ("", "0"):
        problems.append(f"--profile_batch: Keras's TensorBoard profiler works on TensorFlow only; use "
                        f"--profile_batch=0 with --backend={name} (or torch.profiler yourself), or profile with "
                        "--backend=tensorflow")
    if getattr(config, "explain", None):
        problems.append("--explain: dfd's Grad-CAM records gradients with TensorFlow's GradientTape; run it with "
                        "--backend=tensorflow (the same .keras file loads there and scores the same)")
    if problems:
        raise ValueError("; ".join(problems))
