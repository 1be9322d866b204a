"""Writes a tiny dfd TFRecord dataset (shards + metadata.json) without the converter.

The classes are separable on purpose (fake clips are brighter in the centre)
so a test can check that a model learns something in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from dfd.data import metadata, schema
from dfd.data.preprocessing import PreprocessSpec


def fake_clip(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    clip = rng.integers(0, 120, (num_frames, size, size, 3), dtype=np.uint8)
    if label == 1:
        lo, hi = size // 4, size - size // 4
        clip[:, lo:hi, lo:hi, :] += 120
    return clip


def face_clip(rng: np.random.Generator, label: int, num_frames: int, size: int) -> np.ndarray:
    """A face-cropped clip as the converter writes one: a real face (scikit-image's astronaut) filling
    the frame, jittered by a few pixels per frame as a face track is, with mild sensor noise. JPEG
    sizes of such frames are those of real face crops (noise frames compress far worse)."""
    import cv2

    from dfd.testing.face_frames import astronaut_head

    head = astronaut_head()
    margin = max(2, size // 16)
    base = cv2.resize(head, (size + 2 * margin, size + 2 * margin), interpolation=cv2.INTER_AREA)
    frames = []
    for _ in range(num_frames):
        top, left = rng.integers(0, 2 * margin + 1, 2)
        frame = base[top:top + size, left:left + size].astype(np.int16)
        frame += rng.normal(0, 2, frame.shape).astype(np.int16) + (8 if label else 0)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_fake_dataset(
    directory: str | Path,
    *,
    kind: str = "video",
    num_frames: int = 4,
    size: int = 16,
    encoding: str = "raw",
    counts: dict[str, tuple[int, int]] | None = None,
    shards_per_split: int = 2,
    seed: int = 0,
    content: str = "noise",
) -> Path:
    """Writes `counts[split] = (num_real, num_fake)` examples per split; returns the folder.

    content: "noise" (fake_clip: separable classes, for tests) or "face" (face_clip: realistic bytes
    per frame, for benchmarks of disk size and JPEG decoding).
    """
    make_clip = {"noise": fake_clip, "face": face_clip}[content]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = counts or {"train": (8, 8), "val": (4, 4), "test": (4, 4)}
    num_frames = 1 if kind == "image" else num_frames
    spec = PreprocessSpec(kind=kind, num_frames=num_frames, size=size, encoding=encoding)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, (num_real, num_fake) in counts.items():
        labels = [0] * num_real + [1] * num_fake
        rng.shuffle(labels)
        shards = [[] for _ in range(shards_per_split)]
        for index, label in enumerate(labels):
            clip = make_clip(rng, label, num_frames, size)
            source = f"{split}/{schema.LABEL_NAMES[label]}/clip{index:04d}.mp4"
            common = dict(height=size, width=size, label=label, source=source, group=f"g{index}",
                          source_frame_count=num_frames, frame_indices=list(range(num_frames)))
            if encoding == "raw":
                record = schema.encode_example(frames=clip, **common)
            else:
                record = schema.encode_example(
                    jpeg_frames=[schema.encode_jpeg(f, spec.jpeg_quality) for f in clip], **common)
            shards[index % shards_per_split].append(record)
        shard_info = []
        for shard_index, records in enumerate(shards):
            name = metadata.shard_name(split, shard_index, shards_per_split)
            with tf.io.TFRecordWriter(str(directory / name)) as writer:
                for record in records:
                    writer.write(record)
            shard_info.append({"file": name, "count": len(records),
                               "bytes": (directory / name).stat().st_size})
        splits[split] = {"count": len(labels), "class_counts": {"real": num_real, "fake": num_fake},
                         "shards": shard_info}
    metadata.write_metadata(directory, tool="dfd.testing.fake_shards", source={"type": "synthetic", "path": ""},
                            preprocessing=spec, splits=splits, skipped=0, created=False)
    return directory
