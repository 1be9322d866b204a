"""`python -m dfd.bench models`: train-step time of the seed's models on in-memory uint8 batches.

No input pipeline is involved (batches sit on the device), so this is the compute ceiling the trainer's
P2 ratio is measured against. Last line: the jit_compile speedup of the seed CNN+LSTM train step.
Everything measured takes turns (dfd.bench._rounds: --rounds rounds of --steps steps each, after two
warm-up steps per model); each ratio is given by CPU time per step (the headline: it holds on a
loaded machine) and by wall time, as the median of the per-round ratios and their range.

`--backend=tensorflow,torch` times the train step on each Keras backend. Keras fixes its backend when it is
first imported, once per process, so each backend other than this process's runs in a child process
(`KERAS_BACKEND` set, `--child`), kept for the whole run and asked for one round at a time over a pipe,
so that its rounds interleave with this process's; the numbers are gathered into one table, and the
last line is then the torch/tensorflow step-time ratio. `--inference` adds P(fake) inference clips/s on the
same batch through Keras (predict_on_batch, the path dfd.predict takes) and through onnxruntime on the
model's ONNX export (dfd.evaluation.onnx_export's conversion), and its onnxruntime/Keras ratio.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable

import numpy as np

from dfd import bench
from dfd.bench import _rounds
from dfd.settings import setting
from dfd.training.config import PRECISIONS


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = setting("cnn_lstm", "Model name (dfd.models.MODEL_NAMES).")
    input_shape: tuple = setting((16, 64, 64, 3), "Input shape without the batch axis.")
    batch_size: int = setting(32, "Clips or images per step.")
    steps: int = setting(3, "Timed steps per round (after two warm-up steps).")
    rounds: int = setting(5, "Interleaved rounds (every measured thing once per round; at least 5).")
    precision: str = setting("auto", "auto: mixed_float16 with a GPU, float32 on CPU.", choices=PRECISIONS)
    backend: tuple = setting(("tensorflow",), "Keras backends to time, each in its own process: tensorflow, torch.")
    inference: bool = setting(False, "Also time P(fake) inference clips/s: Keras vs onnxruntime on the model's "
                              "ONNX export, same batch.")
    child: bool = setting(False, "Internal: measure on this process's backend, one round per key read on stdin.")


BACKENDS = ("tensorflow", "torch")
RESULT_PREFIX = "dfd.bench.models result: "
READY_PREFIX = "dfd.bench.models ready: "


def train_step_runner(name, input_shape, batch_size, jit_compile) -> Callable[[], object]:
    """One train step of a freshly built and compiled model on a fixed batch, after two warm-up steps."""
    import keras
    import tensorflow as tf

    import dfd.models

    model = dfd.models.build_model(name, input_shape)
    model.compile(optimizer="adam", loss=dfd.models.loss_for(model), metrics=dfd.models.metrics_for(model),
                  jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    # Tensors of the backend, so the batch is on the device before the clock starts.
    to_tensor = tf.constant if keras.backend.backend() == "tensorflow" else keras.ops.convert_to_tensor
    batch = to_tensor(rng.integers(0, 256, size=(batch_size, *input_shape), dtype=np.uint8))
    labels = to_tensor(np.arange(batch_size) % 2)

    def step():
        # train_on_batch returns numbers, so each step has finished when it returns.
        return model.train_on_batch(batch, labels)

    for _ in range(2):
        step()
    return step


def inference_runners(name, input_shape, batch_size) -> dict[str, Callable[[], object]]:
    """P(fake) of one batch by the same model: Keras predict_on_batch and onnxruntime, each warmed up twice."""
    import onnxruntime

    import dfd.models
    from dfd.evaluation import onnx_export, serving

    serving_graph = serving.serving_model(dfd.models.build_model(name, input_shape))
    batch = np.random.default_rng(0).integers(0, 256, size=(batch_size, *input_shape), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        onnx_export.convert(serving_graph, path, tuple(input_shape))
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: batch}
    # Both return numpy arrays: the batch has finished when they return.
    runners = {"keras": lambda: np.asarray(serving_graph.predict_on_batch(batch)),
               "onnxruntime": lambda: session.run(None, feed)[0]}
    for run in runners.values():
        for _ in range(2):
            run()
    return runners


def runners(values) -> dict[str, Callable[[], object]]:
    """This process's backend's measured things, by key "BACKEND/train/jit-off" (and jit-on for
    tensorflow: on torch jit_compile is torch.compile, not the XLA flag the trainer's --jit_compile sets),
    and with --inference "BACKEND/inference/keras" and "BACKEND/inference/onnxruntime"."""
    import keras

    backend = keras.backend.backend()
    input_shape = tuple(int(size) for size in values.input_shape)
    measured = {}
    for jit_compile in (False, True) if backend == "tensorflow" else (False,):
        measured[f"{backend}/train/jit-{'on' if jit_compile else 'off'}"] = train_step_runner(
            values.model, input_shape, values.batch_size, jit_compile)
    if values.inference:
        for runner, run in inference_runners(values.model, input_shape, values.batch_size).items():
            measured[f"{backend}/inference/{runner}"] = run
    return measured


def steps_sample(run: Callable[[], object], steps: int) -> _rounds.Sample:
    """One round: `steps` calls of `run`, timed together."""
    def work() -> int:
        for _ in range(steps):
            run()
        return steps

    return _rounds.timed(work)


def _serve_rounds(values) -> None:
    """--child: builds this backend's runners, says which, then answers each key read on stdin with that
    runner's round (one JSON Sample line), until stdin closes."""
    measured = runners(values)
    print(READY_PREFIX + json.dumps(list(measured)), flush=True)
    for line in sys.stdin:
        sample = steps_sample(measured[line.strip()], values.steps)
        print(RESULT_PREFIX + json.dumps(dataclasses.asdict(sample)), flush=True)


class _Child:
    """A backend in a process of its own (Keras fixes its backend per process), kept for the whole
    benchmark and asked for one round at a time, so its rounds interleave with this process's."""

    def __init__(self, backend: str, argv):
        arguments = [flag for flag in argv[1:] if not flag.startswith(("--backend", "--child"))]
        command = [sys.executable, "-m", "dfd.bench", "models", *arguments, f"--backend={backend}", "--child"]
        self.backend, self.errors = backend, tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(command, env={**os.environ, "KERAS_BACKEND": backend}, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors)
        self.keys = json.loads(self._answer(READY_PREFIX))

    def _answer(self, prefix: str) -> str:
        return _rounds.child_answer(self.process, self.errors, prefix, f"{self.backend} benchmark", ValueError)

    def round(self, key: str) -> _rounds.Sample:
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        return _rounds.Sample(**json.loads(self._answer(RESULT_PREFIX)))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.errors.close()


LABELS = {"train/jit-off": "train step, jit off", "train/jit-on": "train step, jit_compile",
          "inference/keras": "P(fake) batch, Keras", "inference/onnxruntime": "P(fake) batch, onnxruntime"}


def _label(key: str) -> str:
    backend, kind = key.split("/", 1)
    return f"{backend}: {LABELS[kind]}"


def _print_sides(values, sides: dict[str, _rounds.Side], device: str) -> None:
    """The table, then the ratios that apply: onnxruntime / Keras inference, torch / tensorflow step
    time, jit_compile speedup (the last line: torch / tensorflow when both ran, else the jit speedup)."""
    input_shape = tuple(int(size) for size in values.input_shape)
    print(f"{values.model} {input_shape}, batch {values.batch_size}, {device}; {values.rounds} interleaved rounds "
          f"of {values.steps} steps each (after two warm-up steps)")
    for line in _rounds.table(list(sides.values()), "step", "ms", width=40):
        print(line)
    lines = []
    first = next((key.split("/")[0] for key in sides if key.endswith("/inference/keras")), None)
    if first:
        lines.append(_rounds.ratio_line(f"onnxruntime / keras {first} inference clips/s ({values.model}, batch "
                                        f"{values.batch_size})", sides[f"{first}/inference/onnxruntime"],
                                        sides[f"{first}/inference/keras"]))
    if "tensorflow/train/jit-on" in sides:
        lines.append(_rounds.ratio_line(f"jit_compile speedup ({values.model}, batch {values.batch_size})",
                                        sides["tensorflow/train/jit-on"], sides["tensorflow/train/jit-off"]))
    if {"tensorflow/train/jit-off", "torch/train/jit-off"} <= set(sides):
        lines.append(_rounds.ratio_line(f"torch / tensorflow train-step time ({values.model}, batch "
                                        f"{values.batch_size}, jit off)", sides["tensorflow/train/jit-off"],
                                        sides["torch/train/jit-off"]))
    print("\n".join(lines))


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    unknown = sorted(set(values.backend) - set(BACKENDS))
    if unknown or not values.backend:
        raise ValueError(f"--backend takes {', '.join(BACKENDS)} (comma-separated), got {unknown or 'nothing'}")
    _rounds.check_rounds(values.rounds)
    import keras
    import tensorflow as tf

    from dfd.training.runtime import resolve_precision

    precision = resolve_precision(values.precision)
    keras.mixed_precision.set_global_policy(precision)
    if values.child:
        _serve_rounds(values)
        return
    print(_rounds.machine_line("before"), flush=True)
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    sides, children = {}, []
    try:
        for backend in values.backend:
            if backend == keras.backend.backend():
                for key, run in runners(values).items():
                    sides[key] = _rounds.Side(_label(key), functools.partial(steps_sample, run, values.steps))
            else:
                children.append(_Child(backend, argv))
                for key in children[-1].keys:
                    sides[key] = _rounds.Side(_label(key), functools.partial(children[-1].round, key))
        _rounds.interleave(list(sides.values()), values.rounds)
    finally:
        for child in children:
            child.close()
    print(_rounds.machine_line("after"))
    print(f"precision {precision}")
    _print_sides(values, sides, device)
