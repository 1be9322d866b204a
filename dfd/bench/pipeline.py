"""`python -m dfd.bench pipeline`: the training input pipeline against the seed's generator and the decode limit.

On the same synthetic clips (written here with dfd.testing.fake_shards):
  P3 = training pipeline clips/s ÷ the seed's VideoDataGenerator (a keras PyDataset that np.loads
       one .npy per clip, as in the seed), both yielding uint8 batches, same cores. Target >= 1.5.
  P1 = training pipeline clips/s ÷ decode-only limit (read + parse + decode; no shuffle, no
       augmentation). Target >= 0.8. Printed on the last line.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags


def define_flags(flag_values) -> None:
    flags.DEFINE_integer("num_clips", 768, "Clips written for the benchmark (half real, half fake).",
                         flag_values=flag_values)
    flags.DEFINE_integer("num_frames", 16, "Frames per clip (the seed's video model).", flag_values=flag_values)
    flags.DEFINE_integer("size", 64, "Frame size (the seed's 64x64).", flag_values=flag_values)
    flags.DEFINE_enum("encoding", "raw", ["raw", "jpeg"], "Record encoding.", flag_values=flag_values)
    flags.DEFINE_integer("shards", 8, "Shards for the clips.", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 32, "Batch size (the seed's).", flag_values=flag_values)
    flags.DEFINE_integer("passes", 4, "Timed passes per reader and round (after one warm-up pass; 2 rounds).",
                         flag_values=flag_values)
    flags.DEFINE_string("workdir", None, "Where to write the data (default: a temporary folder, removed).",
                        flag_values=flag_values)


# --------------------------------------------------------------------------
# The seed's reader, kept as the seed wrote it (Sequence → keras.utils.PyDataset in Keras 3)
# --------------------------------------------------------------------------

def seed_video_generator(data_dir: str, subset: str, batch_size: int):
    import keras

    class VideoDataGenerator(keras.utils.PyDataset):
        def __init__(self, data_dir, subset, batch_size=batch_size):
            super().__init__()
            self.data_dir = data_dir
            self.subset = subset
            self.batch_size = batch_size
            self.classes = ["real", "fake"]
            self.videos = self._get_video_paths()
            self.on_epoch_end()

        def _get_video_paths(self):
            videos = []
            subset_dir = os.path.join(self.data_dir, self.subset)
            for class_name in self.classes:
                class_dir = os.path.join(subset_dir, class_name)
                for video_name in os.listdir(class_dir):
                    if video_name.endswith(".npy"):
                        videos.append((os.path.join(class_dir, video_name), self.classes.index(class_name)))
            return videos

        def __len__(self):
            return len(self.videos) // self.batch_size

        def __getitem__(self, idx):
            batch_videos = self.videos[idx * self.batch_size:(idx + 1) * self.batch_size]
            batch_frames = []
            batch_labels = []
            for video_path, label in batch_videos:
                frames = np.load(video_path)
                batch_frames.append(frames)
                batch_labels.append(label)
            return np.array(batch_frames), np.array(batch_labels)

        def on_epoch_end(self):
            np.random.shuffle(self.videos)

    return VideoDataGenerator(data_dir, subset, batch_size)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def write_data(root: Path, num_clips: int, num_frames: int, size: int, encoding: str, shards: int):
    """TFRecord shards and, from the same records, the seed's one-.npy-per-clip folders."""
    import tensorflow as tf

    from dfd.data import schema
    from dfd.data.metadata import DatasetMetadata
    from dfd.testing.fake_shards import write_fake_dataset

    half = num_clips // 2
    records = write_fake_dataset(root / "tfrecords", num_frames=num_frames, size=size, encoding=encoding,
                                 counts={"train": (half, half)}, shards_per_split=shards)
    meta = DatasetMetadata.load(records)
    shape = meta.preprocessing.record_shape
    npy_root = root / "npy"
    for path in meta.shard_paths("train"):
        for serialized in tf.data.TFRecordDataset(str(path)):
            parsed = schema.parse_example_numpy(serialized.numpy(), shape)
            folder = npy_root / "Train" / parsed[schema.LABEL_NAME]
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / (Path(parsed[schema.SOURCE]).stem + ".npy"), parsed[schema.FRAMES])
    return records, npy_root


def decode_only_dataset(data_dir: Path, batch_size: int):
    """Read + parse + decode, nothing else: the ceiling any training pipeline over these shards can reach."""
    import tensorflow as tf

    from dfd.data import pipeline, schema
    from dfd.data.metadata import DatasetMetadata

    meta = DatasetMetadata.load(data_dir)
    shape = meta.preprocessing.record_shape
    files = [str(path) for path in meta.shard_paths("train")]
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=pipeline.parallel_shards(len(files)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)

    def parse_and_decode(serialized):
        parsed = schema.parse_batch(serialized, shape)
        return schema.decode_frames(parsed[schema.FRAMES], shape), parsed[schema.LABEL]

    dataset = dataset.batch(batch_size, drop_remainder=True).map(
        parse_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return dataset.prefetch(tf.data.AUTOTUNE)


class _Reader:
    """Timed passes over one reader: one iteration of `batches`, or with `steps` the next `steps`
    batches of one endless iterator (how fit reads the repeating training dataset)."""

    def __init__(self, name: str, batches, files: int, steps: int | None = None):
        self.name, self.batches, self.files, self.steps = name, batches, files, steps
        self.speeds = []

    def run_block(self, passes: int) -> None:
        """A fresh iterator, one warm-up pass (fills shuffle and prefetch buffers), `passes` timed ones.

        The iterator is dropped at the end so its background threads stop and cannot fill
        buffers while another reader is being timed.
        """
        endless = iter(self.batches) if self.steps else None
        for index in range(passes + 1):
            start, clips = time.perf_counter(), 0
            for batch, _ in (itertools.islice(endless, self.steps) if self.steps else self.batches):
                clips += int(batch.shape[0])
                dtype = batch.dtype
            if str(getattr(dtype, "name", dtype)) != "uint8":
                raise RuntimeError(f"{self.name}: expected uint8 batches, got {dtype}")
            if index > 0:
                self.speeds.append(clips / (time.perf_counter() - start))
        del endless


def measure(readers: list[_Reader], passes: int, rounds: int = 2) -> list[float]:
    """Median clips/s of each reader over `rounds` blocks of `passes` passes, the readers taking
    turns so that load from other processes on a shared machine hits them alike."""
    for _ in range(rounds):
        for reader in readers:
            reader.run_block(passes)
    return [statistics.median(reader.speeds) for reader in readers]


class _SequenceEpochs:
    """Iterates a PyDataset the way fit does without workers: every index, then on_epoch_end."""

    def __init__(self, sequence):
        self.sequence = sequence

    def __iter__(self):
        for index in range(len(self.sequence)):
            yield self.sequence[index]
        self.sequence.on_epoch_end()


def main(argv) -> None:
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from dfd.data import pipeline

    root = Path(flag_values.workdir or tempfile.mkdtemp(prefix="dfd-bench-pipeline-"))
    try:
        records, npy_root = write_data(root, flag_values.num_clips, flag_values.num_frames, flag_values.size,
                                       flag_values.encoding, flag_values.shards)
        batch_size, passes = flag_values.batch_size, flag_values.passes
        # As dfd.train reads it: repeating, `steps` batches per epoch.
        training, num_clips = pipeline.make_dataset(records, "train", batch_size=batch_size, training=True,
                                                    seed=0, repeat=True)
        steps = pipeline.steps_per_epoch(num_clips, batch_size, training=True)
        num_shards = len(list(records.glob("*.tfrecord")))
        no_flip, _ = pipeline.make_dataset(records, "train", batch_size=batch_size, training=True, seed=0,
                                           repeat=True, augment=pipeline.NO_AUGMENT)
        readers = [
            _Reader("training pipeline (shuffle, flip)", training, num_shards, steps),
            _Reader("training pipeline, no flip (shuffle only)", no_flip, num_shards, steps),
            _Reader("decode-only limit (read+parse+decode)", decode_only_dataset(records, batch_size).repeat(),
                    num_shards, steps),
            _Reader("seed VideoDataGenerator (np.load per clip)",
                    _SequenceEpochs(seed_video_generator(str(npy_root), "Train", batch_size)),
                    len(list(npy_root.rglob("*.npy")))),
        ]
        speeds = measure(readers, passes)
        rows = [(reader.name, speed, reader.files) for reader, speed in zip(readers, speeds)]
    finally:
        if not flag_values.workdir:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{flag_values.num_clips} clips of {flag_values.num_frames}x{flag_values.size}x{flag_values.size}x3 "
          f"uint8 ({flag_values.encoding}), batch {batch_size}, {os.cpu_count()} CPU cores, "
          f"median of 2 rounds x {passes} passes")
    print(f"{'reader':<44} {'clips/s':>10} {'files':>6}")
    for name, speed, files in rows:
        print(f"{name:<44} {speed:>10.1f} {files:>6}")
    training_speed, _, decode_speed, seed_speed = (row[1] for row in rows)
    print(f"P3 training pipeline / seed generator = {training_speed / seed_speed:.2f} (target >= 1.5)")
    print(f"P1 training pipeline / decode-only limit = {training_speed / decode_speed:.2f} (target >= 0.8)")
