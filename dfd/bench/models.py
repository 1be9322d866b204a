"""`python -m dfd.bench models`: train-step time of the seed's models on in-memory uint8 batches.

No input pipeline is involved (batches sit on the device), so this is the compute ceiling the trainer's
P2 ratio is measured against. Last line: the jit_compile speedup of the seed CNN+LSTM train step.
"""

from __future__ import annotations

import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from dfd import settings  # noqa: E402
from dfd.settings import setting  # noqa: E402
from dfd.training.config import PRECISIONS  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = setting("cnn_lstm", "Model name (dfd.models.MODEL_NAMES).")
    input_shape: tuple = setting((16, 64, 64, 3), "Input shape without the batch axis.")
    batch_size: int = setting(32, "Clips or images per step.")
    steps: int = setting(10, "Timed steps (after warm-up).")
    precision: str = setting("auto", "auto: mixed_float16 with a GPU, float32 on CPU.", choices=PRECISIONS)


def define_flags(flag_values=flags.FLAGS) -> None:
    settings.define_flags(Settings, flag_values)


def time_train_step(name, input_shape, batch_size, steps, jit_compile) -> float:
    """Median seconds per train step after two warm-up steps (compilation)."""
    import keras
    import tensorflow as tf

    import dfd.models

    model = dfd.models.build_model(name, input_shape)
    model.compile(optimizer="adam", loss=dfd.models.loss_for(model), metrics=dfd.models.metrics_for(model),
                  jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    batch = tf.constant(rng.integers(0, 256, size=(batch_size, *input_shape), dtype=np.uint8))
    labels = tf.constant(np.arange(batch_size) % 2)
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


def main(argv) -> None:
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(argv)
    import keras
    import tensorflow as tf

    from dfd.training.runtime import resolve_precision

    precision = resolve_precision(flag_values.precision)
    keras.mixed_precision.set_global_policy(precision)
    input_shape = tuple(int(size) for size in flag_values.input_shape)
    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"{'model':<14}{'input':<18}{'batch':>6}{'precision':>15}{'jit':>6}{'ms/step':>10}{'clips/s':>10}  device")
    seconds = {}
    for jit_compile in (False, True):
        seconds[jit_compile] = time_train_step(flag_values.model, input_shape, flag_values.batch_size,
                                               flag_values.steps, jit_compile)
        print(f"{flag_values.model:<14}{str(input_shape):<18}{flag_values.batch_size:>6}{precision:>15}"
              f"{str(jit_compile):>6}{seconds[jit_compile] * 1e3:>10.1f}"
              f"{flag_values.batch_size / seconds[jit_compile]:>10.1f}  {device}")
    print(f"jit_compile speedup ({flag_values.model}, batch {flag_values.batch_size}): "
          f"{seconds[False] / seconds[True]:.2f}x")
