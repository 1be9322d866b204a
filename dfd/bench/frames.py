"""`python -m dfd.bench frames`: what more and larger frames per clip cost on disk and in read speed.

For each clip shape (16x64x64, 32x128x128, 32x224x224 by default) and encoding (raw, jpeg) it writes
`num_clips` face-cropped clips (dfd.testing.fake_shards content="face": a real face photograph
filling the frame, jittered and noisy like a face track, so JPEG sizes are those of real face
crops) and reads them back through the training pipeline (dfd.data.pipeline.make_train_dataset, shuffle,
no host augmentation), warm page cache:
  disk KB/clip       shard bytes per clip (metadata.json)
  clips/s            whole clips decoded per second (a video model's input)
  frames decoded/s   clips/s x frames per clip
  images/s K=4       images delivered per second with --frames_per_clip=4 (an image model on video
                     records: every frame of a clip is still read and decoded, 4 are kept)
The last line is the slowest configuration's frames decoded/s.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time

from dfd import bench
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    num_clips: int = setting(192, "Clips per configuration (half real, half fake).")
    shapes: tuple = setting(("16x64", "32x128", "32x224"), "FRAMESxSIZE clip shapes to measure.")
    batch_size: int = setting(32, "Batch size (clips; images with frames_per_clip).")
    passes: int = setting(3, "Timed passes per reader (after one warm-up pass); the median is kept.")
    workdir: str | None = setting(None, "Where to write the data (default: a temporary folder, removed).")


def _speed(dataset, steps: int, passes: int) -> float:
    """Median examples/s over `passes` passes of `steps` batches of one endless iterator (after a warm-up)."""
    iterator = iter(dataset)
    speeds = []
    for index in range(passes + 1):
        start, count = time.perf_counter(), 0
        for _ in range(steps):
            batch, _ = next(iterator)
            count += int(batch.shape[0])
        if index:
            speeds.append(count / (time.perf_counter() - start))
    return statistics.median(speeds)


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    from dfd.data import pipeline
    from dfd.data.metadata import DatasetMetadata
    from dfd.testing.fake_shards import write_fake_dataset

    batch_size, half = values.batch_size, values.num_clips // 2
    rows = []
    with bench.work_folder(values.workdir, "frames") as root:
        for shape in values.shapes:
            num_frames, size = (int(part) for part in shape.split("x"))
            for encoding in ("raw", "jpeg"):
                data = write_fake_dataset(root / f"{shape}-{encoding}", num_frames=num_frames, size=size,
                                          encoding=encoding, counts={"train": (half, half)}, shards_per_split=8,
                                          content="face")
                meta = DatasetMetadata.load(data)
                shard_bytes = sum(shard["bytes"] for shard in meta.raw["splits"]["train"]["shards"])
                clips, count, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True)
                steps = pipeline.steps_per_epoch(count, batch_size, training=True)
                clip_speed = _speed(clips, steps, values.passes)
                frames, _, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True,
                                                           frames_per_clip=4)
                image_speed = _speed(frames, pipeline.steps_per_epoch(count * 4, batch_size, training=True),
                                     values.passes)
                rows.append((shape, encoding, shard_bytes / count, clip_speed, clip_speed * num_frames, image_speed))
                shutil.rmtree(data, ignore_errors=True)

    print(f"{values.num_clips} face-cropped clips per row, batch {batch_size}, {os.cpu_count()} CPU cores, "
          f"warm page cache, median of {values.passes} passes")
    print(f"{'clip':<8} {'encoding':<8} {'disk KB/clip':>13} {'clips/s':>9} {'frames decoded/s':>17} "
          f"{'images/s K=4':>13}")
    for shape, encoding, disk, clip_speed, frame_speed, image_speed in rows:
        print(f"{shape:<8} {encoding:<8} {disk / 1e3:>13.1f} {clip_speed:>9.1f} {frame_speed:>17.0f} "
              f"{image_speed:>13.0f}")
    slowest = min(rows, key=lambda row: row[4])
    print(f"slowest: {slowest[0]} {slowest[1]} at {slowest[4]:.0f} frames decoded/s ({slowest[3]:.1f} clips/s)")
