"""`python -m dfd.bench models`: train-step time of the seed's models on in-memory uint8 batches.

No input pipeline is involved (batches sit on the device), so this is the compute ceiling the trainer's
P2 ratio is measured against. Last line: the jit_compile speedup of the seed CNN+LSTM train step.

`--backend=tensorflow,torch` times the train step on each Keras backend. Keras fixes its backend when it is
first imported, once per process, so each backend other than this process's runs in a child process
(`KERAS_BACKEND` set, `--child` printing one JSON line) and the numbers are gathered into one table; the
last line is then the torch/tensorflow step-time ratio. `--inference` adds P(fake) inference clips/s on the
same batch through Keras (predict_on_batch, the path dfd.predict takes) and through onnxruntime on the
model's ONNX export (dfd.evaluation.onnx_export's conversion), and its onnxruntime/Keras ratio.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from dfd import bench
from dfd.settings import setting
from dfd.training.config import PRECISIONS


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = setting("cnn_lstm", "Model name (dfd.models.MODEL_NAMES).")
    input_shape: tuple = setting((16, 64, 64, 3), "Input shape without the batch axis.")
    batch_size: int = setting(32, "Clips or images per step.")
    steps: int = setting(10, "Timed steps (after warm-up).")
    precision: str = setting("auto", "auto: mixed_float16 with a GPU, float32 on CPU.", choices=PRECISIONS)
    backend: tuple = setting(("tensorflow",), "Keras backends to time, each in its own process: tensorflow, torch.")
    inference: bool = setting(False, "Also time P(fake) inference clips/s: Keras vs onnxruntime on the model's "
                              "ONNX export, same batch.")
    child: bool = setting(False, "Internal: measure on this process's backend and print one JSON line.")


BACKENDS = ("tensorflow", "torch")
RESULT_PREFIX = "dfd.bench.models result: "


def time_train_step(name, input_shape, batch_size, steps, jit_compile) -> float:
    """Median seconds per train step after two warm-up steps (compilation)."""
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
    for _ in range(2):
        model.train_on_batch(batch, labels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        # train_on_batch returns numbers, so each step has finished when the clock stops.
        model.train_on_batch(batch, labels)
        times.append(time.perf_counter() - start)
    keras.backend.clear_session()
    return float(np.median(times))


def time_inference(name, input_shape, batch_size, steps) -> dict:
    """Median seconds per P(fake) batch of the same model and batch: Keras predict_on_batch and onnxruntime."""
    import keras
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
    runners = {"keras": lambda: np.asarray(serving_graph.predict_on_batch(batch)),
               "onnxruntime": lambda: session.run(None, feed)[0]}
    seconds = {}
    for runner_name, run in runners.items():
        for _ in range(2):
            run()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            run()   # both return numpy arrays: the batch has finished when the clock stops
            times.append(time.perf_counter() - start)
        seconds[runner_name] = float(np.median(times))
    keras.backend.clear_session()
    return seconds


def measure(values, precision: str) -> dict:
    """This process's backend: train-step seconds (jit off, and on for tensorflow) and inference seconds."""
    import keras

    backend = keras.backend.backend()
    input_shape = tuple(int(size) for size in values.input_shape)
    # jit_compile on torch is torch.compile, not the XLA flag the trainer's --jit_compile sets: not timed here.
    jit_options = (False, True) if backend == "tensorflow" else (False,)
    result = {"backend": backend, "precision": precision, "train_s": {}}
    for jit_compile in jit_options:
        result["train_s"][str(jit_compile)] = time_train_step(values.model, input_shape,
                                                              values.batch_size, values.steps, jit_compile)
    if values.inference:
        result["inference_s"] = time_inference(values.model, input_shape, values.batch_size,
                                               values.steps)
    return result


def _in_child(backend: str, argv) -> dict:
    """measure() on `backend` in a new process (Keras's backend is fixed per process)."""
    arguments = [flag for flag in argv[1:] if not flag.startswith(("--backend", "--child"))]
    command = [sys.executable, "-m", "dfd.bench", "models", *arguments, f"--backend={backend}", "--child"]
    done = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not lines:
        raise ValueError(f"the {backend} benchmark process failed (exit code {done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _print_backends(values, results: list, device: str) -> None:
    input_shape = tuple(int(size) for size in values.input_shape)
    print(f"{'backend':<12}{'model':<14}{'input':<18}{'batch':>6}{'precision':>15}{'jit':>6}{'ms/step':>10}"
          f"{'clips/s':>10}  device")
    for result in results:
        for jit, seconds in result["train_s"].items():
            print(f"{result['backend']:<12}{values.model:<14}{str(input_shape):<18}{values.batch_size:>6}"
                  f"{result['precision']:>15}{jit:>6}{seconds * 1e3:>10.1f}{values.batch_size / seconds:>10.1f}"
                  f"  {device}")
    inference = [result for result in results if "inference_s" in result]
    if inference:
        print(f"\n{'inference (P(fake))':<36}{'batch':>6}{'ms/batch':>10}{'clips/s':>10}")
        for result in inference:
            for runner, seconds in result["inference_s"].items():
                print(f"{runner + ' (' + result['backend'] + ')':<36}{values.batch_size:>6}{seconds * 1e3:>10.1f}"
                      f"{values.batch_size / seconds:>10.1f}")
    by_backend = {result["backend"]: result for result in results}
    if inference:
        first = inference[0]
        print(f"onnxruntime / keras {first['backend']} inference clips/s ({values.model}, batch "
              f"{values.batch_size}): {first['inference_s']['keras'] / first['inference_s']['onnxruntime']:.2f}x")
    if {"tensorflow", "torch"} <= set(by_backend):
        ratio = by_backend["torch"]["train_s"]["False"] / by_backend["tensorflow"]["train_s"]["False"]
        print(f"torch / tensorflow train-step time ({values.model}, batch {values.batch_size}, jit off): "
              f"{ratio:.2f}x")


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    unknown = sorted(set(values.backend) - set(BACKENDS))
    if unknown or not values.backend:
        raise ValueError(f"--backend takes {', '.join(BACKENDS)} (comma-separated), got {unknown or 'nothing'}")
    import keras
    import tensorflow as tf

    from dfd.training.runtime import resolve_precision

    precision = resolve_precision(values.precision)
    keras.mixed_precision.set_global_policy(precision)
    if values.child:
        print(RESULT_PREFIX + json.dumps(measure(values, precision)), flush=True)
        return
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    if list(values.backend) != ["tensorflow"] or values.inference:
        results = [measure(values, precision) if backend == keras.backend.backend() else _in_child(backend, argv)
                   for backend in values.backend]
        _print_backends(values, results, device)
        return

    input_shape = tuple(int(size) for size in values.input_shape)
    print(f"{'model':<14}{'input':<18}{'batch':>6}{'precision':>15}{'jit':>6}{'ms/step':>10}{'clips/s':>10}  device")
    seconds = {}
    for jit_compile in (False, True):
        seconds[jit_compile] = time_train_step(values.model, input_shape, values.batch_size,
                                               values.steps, jit_compile)
        print(f"{values.model:<14}{str(input_shape):<18}{values.batch_size:>6}{precision:>15}"
              f"{str(jit_compile):>6}{seconds[jit_compile] * 1e3:>10.1f}"
              f"{values.batch_size / seconds[jit_compile]:>10.1f}  {device}")
    print(f"jit_compile speedup ({values.model}, batch {values.batch_size}): "
          f"{seconds[False] / seconds[True]:.2f}x")
