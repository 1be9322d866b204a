"""Prediction benchmark: `python -m dfd.bench predict [--files=32]`.

On generated mp4 clips (moving shapes, mp4v through OpenCV) and an untrained
model of the demo's shape saved into a run directory, it measures files/s of
  (a) dfd.predict's path: records built by threads, batches of --batch_size
  (b) one file at a time (batch size 1, what a loop calling model.predict per file does)
  (c) record building alone (converter's make_record, sequential, no model): the decode cost
Prints a table and a/b on the last line.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from dfd import bench
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    files: int = setting(32, "Generated clips to score.")
    source_frames: int = setting(48, "Frames per generated clip.")
    source_height: int = setting(120, "Height of generated clips.")
    source_width: int = setting(160, "Width of generated clips.")
    frames: int = setting(16, "Frames per record (the model's clip length).")
    frame_size: int = setting(64, "Frame size of the records.")
    model: str = setting("cnn_lstm", "Model (untrained) to score with.", choices=("cnn_lstm", "image_cnn"))
    batch_size: int = setting(32, "Batch size of (a).")
    repeats: int = setting(2, "Timed runs of each path; the best counts.")


def main(argv) -> None:
    values = bench.parse(Settings, argv)

    import keras

    from dfd import models
    from dfd.data.preprocessing import PreprocessSpec
    from dfd.evaluation import loading, predict
    from dfd.preprocess import records
    from dfd.run_layout import RunLayout
    from dfd.testing import synthetic

    values = values
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        paths = [str(synthetic.write_mp4(root / "clips" / f"clip{index:04d}.mp4", synthetic.moving_clip(
            index, values.source_frames, values.source_height, values.source_width))) for index in range(values.files)]
        spec = PreprocessSpec(kind="video", num_frames=values.frames, size=values.frame_size)
        size = values.frame_size
        shape = (size, size, 3) if models.model_kind(values.model) == "image" else (values.frames, size, size, 3)
        layout = RunLayout(root / "run")
        layout.best_model.parent.mkdir(parents=True)
        keras.utils.set_random_seed(0)
        models.build_model(values.model, shape).save(layout.best_model)
        spec.save(layout.preprocessing)
        loaded = loading.load(layout.root)
        # Warm-up: trace the inference function for both batch shapes before timing.
        predict.predict_files(loaded, paths[:values.batch_size], values.batch_size, progress=None)
        predict.predict_files(loaded, paths[:1], 1, progress=None)

        def files_per_second(run) -> float:
            best = float("inf")
            for _ in range(values.repeats):   # best of: the machine may be shared
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            return len(paths) / best

        batched = files_per_second(lambda: predict.predict_files(loaded, paths, values.batch_size, progress=None))
        single = files_per_second(lambda: predict.predict_files(loaded, paths, 1, progress=None))
        decode = files_per_second(lambda: [records.make_record(path, spec, 0, "") for path in paths])

    print(f"{values.files} mp4 clips of {values.source_frames} frames {values.source_width}x{values.source_height}; "
          f"model {values.model} on {values.frames}x{size}x{size}")
    print(f"{'path':<48}{'files/s':>10}")
    print(f"{'(a) dfd.predict, batch ' + str(values.batch_size) + ', threaded records':<48}{batched:>10.1f}")
    print(f"{'(b) one file at a time (batch 1)':<48}{single:>10.1f}")
    print(f"{'(c) make_record only, sequential, no model':<48}{decode:>10.1f}")
    print(f"a/b = {batched / single:.2f}")
