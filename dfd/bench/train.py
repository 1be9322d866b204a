"""`python -m dfd.bench train`: is training ever input-bound?

  P2 = model.fit clips/s fed by the TFRecord pipeline ÷ model.fit clips/s on the same clips held in
       memory (numpy arrays), same model, same batch size. Target >= 0.95. Printed on the last line.
On a GPU it also reports the step time at batch 32 of the seed's CNN+LSTM under mixed precision
(target <= 12 ms; the seed took 376 ms).
Side by side, on the in-memory batches: the step time of the same model behind the on-device
augmentation layer (dfd.models.augmentation) with the default flip, and with every op on.

The feeds take turns (dfd.bench._rounds: one fit call per feed and round, --rounds rounds, each one
warm-up epoch and --epochs timed ones); the two P2 feeds train the same model. Ratios are given by
CPU time per clip (the headline: it holds on a loaded machine) and by clips/s, as the median of the
per-round ratios and their range.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import time

import numpy as np

from dfd import bench
from dfd.bench import _rounds
from dfd.data.schema import ENCODINGS
from dfd.settings import setting
from dfd.training.config import PRECISIONS


@dataclasses.dataclass(frozen=True)
class Settings:
    num_clips: int = setting(256, "Clips written for the benchmark.")
    num_frames: int = setting(16, "Frames per clip (the seed's video model).")
    size: int = setting(64, "Frame size (the seed's 64x64).")
    encoding: str = setting("raw", "Record encoding.", choices=ENCODINGS)
    batch_size: int = setting(32, "Batch size (the seed's).")
    epochs: int = setting(1, "Timed epochs per feed and round (after one warm-up epoch).")
    rounds: int = setting(5, "Interleaved rounds (every feed once per round; at least 5).")
    augmentations: bool = setting(True, "Also time the in-memory feed behind the on-device augmentation (flip; all "
                                  "ops) and the augmentation layer alone.")
    precision: str = setting("auto", "auto: mixed_float16 on a GPU, float32 on CPU.", choices=PRECISIONS)
    workdir: str | None = setting(None, "Where to write the data (default: a temporary folder, removed).")


def _augmentations():
    from dfd.models.augmentation import DeviceAugment
    return [("flip (default)", DeviceAugment(flip=True)),
            ("all ops", DeviceAugment(flip=True, crop=0.2, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05,
                                      blur=1.5, noise=0.03, cutout=0.3))]


def _layer_cost(augment, batch, calls: int = 10) -> tuple[float, float]:
    """(CPU ms, wall ms) per batch of the augmentation layer alone, in training mode, traced once.

    CPU time of this process is what the op costs and moves little with other jobs on a shared
    machine, where step times (wall) do.
    """
    import tensorflow as tf

    from dfd.models.augmentation import ClipAugmentation

    layer = ClipAugmentation(**{field: getattr(augment, field) for field in augment.__dataclass_fields__}, seed=0)
    apply = tf.function(lambda clips: layer(clips, training=True))
    batch = tf.constant(batch)
    apply(batch)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        apply(batch).numpy()
    return 1000 * (time.process_time() - cpu) / calls, 1000 * (time.perf_counter() - wall) / calls


def _epoch_timer(clips_per_epoch: int):
    """A callback that keeps each epoch's Sample (wall and CPU time, this process's threads: the
    model's step and the input pipeline's background threads alike)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.samples = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.perf_counter(), _rounds.cpu_seconds())

        def on_epoch_end(self, epoch, logs=None):
            wall, cpu = self._start
            self.samples.append(_rounds.Sample(clips_per_epoch, time.perf_counter() - wall,
                                               _rounds.cpu_seconds() - cpu))

    return EpochTimer()


def _gpu_utilisation() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] + " %"
    except (OSError, IndexError, ValueError):
        return "n/a"


def _fit_side(name: str, model, epochs: int, clips_per_epoch: int, **fit_args) -> _rounds.Side:
    """A Side: one fit call per round, one warm-up epoch (a fresh iterator fills its buffers) and
    `epochs` timed ones, whose Samples add up to the round's."""
    def run() -> _rounds.Sample:
        timer = _epoch_timer(clips_per_epoch)
        model.fit(epochs=epochs + 1, verbose=0, callbacks=[timer], **fit_args)
        return functools.reduce(operator.add, timer.samples[1:])

    return _rounds.Side(name, run)


def _report(values, parameters: int, num_clips: int, precision: str, sides, augmentation_names, layer_costs,
            utilisation) -> None:
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    print(f"seed cnn_lstm ({parameters:,} parameters) on {num_clips} clips of "
          f"{values.num_frames}x{values.size}x{values.size}x3 uint8, batch {values.batch_size}, {precision}, {device}; "
          f"{values.rounds} interleaved rounds of one warm-up and {values.epochs} timed epochs per feed")
    for line in _rounds.table(sides, "clip", "ms", width=40):
        print(line)
    if utilisation:
        print(f"GPU utilisation after the pipeline-fed epochs: {utilisation}")
    for name, side in zip(augmentation_names, sides[2:], strict=True):
        print(_rounds.ratio_line(f"on-device {name}: in memory + it / in memory", side, sides[1]))
    if layer_costs:
        print("augmentation layer alone, per batch: " + ", ".join(
            f"{name} {cpu:.1f} ms CPU ({wall:.1f} ms wall)" for name, (cpu, wall) in layer_costs))
    print(_rounds.ratio_line("P2 fit on TFRecord pipeline / fit on in-memory batches", sides[0], sides[1], ">= 0.95"))


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    _rounds.check_rounds(values.rounds)
    import keras
    import tensorflow as tf

    from dfd import models
    from dfd.data import pipeline
    from dfd.models import augmentation
    from dfd.testing.fake_shards import write_fake_dataset
    from dfd.training.runtime import resolve_precision

    precision = resolve_precision(values.precision)
    keras.config.set_dtype_policy(precision)
    batch_size, epochs = values.batch_size, values.epochs
    print(_rounds.machine_line("before"), flush=True)
    with bench.work_folder(values.workdir, "train") as root:
        half = values.num_clips // 2
        data = write_fake_dataset(root / "tfrecords", num_frames=values.num_frames, size=values.size,
                                  encoding=values.encoding, counts={"train": (half, half)},
                                  shards_per_split=8)
        meta = pipeline.open_dataset(data)
        feed, num_clips, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True)
        steps = pipeline.steps_per_epoch(num_clips, batch_size, training=True)
        # The same clips in memory: one pass of the (non-augmenting) evaluation reader into numpy.
        evaluation, _ = pipeline.make_eval_dataset(meta, "train", batch_size=batch_size)
        clips = np.concatenate([x.numpy() for x, _ in evaluation])[: steps * batch_size]
        labels = np.concatenate([y.numpy() for _, y in evaluation])[: steps * batch_size]

        def compiled(augment=None):
            keras.utils.set_random_seed(0)
            built = models.build_model("cnn_lstm", clips.shape[1:])
            if augment is not None:
                built = augmentation.wrap(built, augment, seed=0)
            built.compile(optimizer=keras.optimizers.Adam(1e-3), loss=models.loss_for(built),
                          metrics=models.metrics_for(built))
            built.fit(clips, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)   # trace once
            return built

        in_memory = dict(x=clips, y=labels, batch_size=batch_size, shuffle=False)
        model = compiled()   # one model for both P2 sides: the same weights' compute, only the feed differs
        clips_per_epoch = steps * batch_size
        sides = [_fit_side("fit on the TFRecord pipeline (shuffle)", model, epochs, clips_per_epoch, x=feed,
                           steps_per_epoch=steps, shuffle=False),
                 _fit_side("fit on numpy arrays in memory", model, epochs, clips_per_epoch, **in_memory)]
        augmentations = _augmentations() if values.augmentations else []
        sides += [_fit_side(f"in memory + on-device {name}", compiled(augment), epochs, clips_per_epoch, **in_memory)
                  for name, augment in augmentations]
        _rounds.interleave(sides, values.rounds, progress=lambda line: print(line, flush=True))
        layer_costs = [(name, _layer_cost(augment, clips[:batch_size])) for name, augment in augmentations]
        utilisation = _gpu_utilisation() if tf.config.list_physical_devices("GPU") else None
    print(_rounds.machine_line("after"))
    _report(values, model.count_params(), num_clips, precision, sides, [name for name, _ in augmentations],
            layer_costs, utilisation)
