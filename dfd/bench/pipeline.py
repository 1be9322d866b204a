"""`python -m dfd.bench pipeline`: the training input pipeline against the seed's generator and the decode limit.

On the same synthetic clips (written here with dfd.testing.fake_shards):
  P3 = training pipeline ÷ the seed's VideoDataGenerator (a keras PyDataset that np.loads one .npy
       per clip, as in the seed), both yielding uint8 batches, same cores. Target >= 1.5.
  P1 = training pipeline ÷ its decode-only limit: make_train_dataset itself with a record shuffle
       buffer of one (the same read, parse, decode, stages, threads and options; only the stage under
       test, the shuffle, left out). Target >= 0.9. Printed on the last line.
Also, side by side: the training pipeline with the host's only augmentation, JPEG re-compression at
a random quality (--augment_jpeg, default range 30,95 here), to show what it costs.

The readers take turns (dfd.bench._rounds: A B C ... A B C ..., --rounds rounds, each one warm-up
pass and --passes timed passes on a fresh iterator). Each ratio is given by CPU time per clip (the
headline: other jobs on the machine stretch wall time, not the work) and by clips/s, as the median
of the per-round ratios and their range; each reader's clips/s and CPU per clip as min / median / max.

The training pipeline and the seed's generator run twice: with their files in the page cache
(written just before: np.load is then a memcpy) and cold, every file evicted from the page cache
before each pass with posix_fadvise(DONTNEED), which needs no root (the tf.data reader then starts
a fresh iterator, so that no record of the pass was read ahead from the page cache in the last
one). Cold is the seed's real situation: 22,000+ .npy files on a disk, far more than the page cache
holds across epochs. P3 is printed for both. Bytes fetched from storage per clip prove the cold
case is cold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import itertools
import mmap
import os
import statistics
from pathlib import Path

import numpy as np

from dfd import bench
from dfd.bench import _rounds
from dfd.data.schema import ENCODINGS
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    num_clips: int = setting(768, "Clips written for the benchmark (half real, half fake).")
    num_frames: int = setting(16, "Frames per clip (the seed's video model).")
    size: int = setting(64, "Frame size (the seed's 64x64).")
    encoding: str = setting("raw", "Record encoding.", choices=ENCODINGS)
    shards: int = setting(8, "Shards for the clips.")
    batch_size: int = setting(32, "Batch size (the seed's).")
    passes: int = setting(2, "Timed passes per reader and round (after one warm-up pass).")
    rounds: int = setting(5, "Interleaved rounds (every reader once per round; at least 5).")
    jpeg_quality: str = setting("30,95", "Quality range of the JPEG re-compression reader.")
    workdir: str | None = setting(None, "Where to write the data (default: a temporary folder, removed).")


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


# --------------------------------------------------------------------------
# Page cache
# --------------------------------------------------------------------------

def evict_from_page_cache(paths) -> None:
    """Drops the files' pages from the page cache so the next read comes from the disk.

    fsync first: DONTNEED skips dirty pages, and the benchmark's files were just written.
    """
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(paths) -> float | None:
    """Fraction of the files' pages in the page cache (mincore), or None where it cannot be asked.

    Checks that evict_from_page_cache really evicts (a filesystem may ignore the advice).
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    resident = total = 0
    for path in paths:
        size = os.path.getsize(path)
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            # Mapping touches no page; mincore then reports which pages are cached.
            address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                return None
            pages = -(-size // mmap.PAGESIZE)
            vector = (ctypes.c_ubyte * pages)()
            failed = libc.mincore(ctypes.c_void_p(address), size, vector) != 0
            libc.munmap(ctypes.c_void_p(address), size)
            if failed:
                return None
            resident += sum(byte & 1 for byte in vector)
            total += pages
        finally:
            os.close(fd)
    return resident / total if total else 1.0


def _disk_read_bytes() -> float:
    """Bytes this process has caused to be fetched from storage (nan where /proc/self/io is missing)."""
    try:
        with open("/proc/self/io") as file:
            for line in file:
                if line.startswith("read_bytes:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


class Reader:
    """One reader's rounds (the `run` of a dfd.bench._rounds Side): `batches` iterated once per pass, or
    with `steps` the next `steps` batches of one endless iterator (how fit reads the repeating training
    dataset). With `evict` (a list of file paths) the files leave the page cache before every pass."""

    def __init__(self, name: str, batches, files: int, passes: int, steps: int | None = None, evict=None):
        self.name, self.batches, self.files, self.passes, self.steps, self.evict = (
            name, batches, files, passes, steps, evict)
        # Bytes this process fetched from storage per clip (/proc/self/io read_bytes), one per round:
        # ~ the clip size when the cold case really reads from the disk, ~0 when warm.
        self.disk_bytes_per_clip: list[float] = []

    def side(self) -> _rounds.Side:
        return _rounds.Side(self.name, self.run_round)

    def _one_pass(self, endless) -> int:
        clips, dtype = 0, None
        for batch, _ in (itertools.islice(endless, self.steps) if self.steps else self.batches):
            clips += int(batch.shape[0])
            dtype = batch.dtype
        if str(getattr(dtype, "name", dtype)) != "uint8":
            raise RuntimeError(f"{self.name}: expected uint8 batches, got {dtype}")
        return clips

    def run_round(self) -> _rounds.Sample:
        """A fresh iterator, one untimed warm-up pass (fills shuffle and prefetch buffers), then
        `passes` timed passes: their Sample.

        The iterator is dropped at the end so its background threads stop and cannot fill
        buffers while another reader is being timed.
        """
        endless = iter(self.batches) if self.steps else None
        total, disk_bytes = None, 0.0
        for index in range(self.passes + 1):
            if self.evict:
                # Drop the running iterator first: its threads would go on reading ahead while
                # (and after) the files are evicted, and the next pass would find those pages cached.
                endless = None
                evict_from_page_cache(self.evict)
                if self.steps:
                    # A tf.data iterator reads ahead (shuffle buffer, prefetch): a running one
                    # would have read part of this pass's records during the last pass, from the
                    # page cache. A fresh iterator per cold pass reads every record it delivers
                    # from the disk, and pays for filling its shuffle buffer within the pass
                    # (conservative: a long epoch fills it once).
                    endless = iter(self.batches)
            disk_before = _disk_read_bytes()
            sample = _rounds.timed(functools.partial(self._one_pass, endless))
            if index > 0:   # pass 0 warms up
                total = sample if total is None else total + sample
                disk_bytes += _disk_read_bytes() - disk_before
        del endless
        self.disk_bytes_per_clip.append(disk_bytes / total.items)
        return total


class _SequenceEpochs:
    """Iterates a PyDataset the way fit does without workers: every index, then on_epoch_end."""

    def __init__(self, sequence):
        self.sequence = sequence

    def __iter__(self):
        for index in range(len(self.sequence)):
            yield self.sequence[index]
        self.sequence.on_epoch_end()


def limit_dataset(meta, batch_size: int):
    """P1's limit: make_train_dataset itself, the same stages, threads and options, with a record
    shuffle buffer of one record (a pass-through), so that the only work it lacks is the stage under
    test, the shuffle. (The file order is still shuffled: 8 names per epoch, nothing to measure.)"""
    from dfd.data import pipeline

    dataset, _, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True, shuffle_buffer=1)
    return dataset


def _readers(values, records: Path, npy_root: Path) -> list[Reader]:
    """Every reader of the benchmark, in the order they take turns."""
    from dfd.data import pipeline

    batch_size, passes = values.batch_size, values.passes
    # As dfd.train reads it: repeating, `steps` batches per epoch.
    meta = pipeline.open_dataset(records)
    training, num_clips, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True)
    steps = pipeline.steps_per_epoch(num_clips, batch_size, training=True)
    jpeg_range = pipeline.parse_jpeg_quality(values.jpeg_quality)
    recompressing, _, _ = pipeline.make_train_dataset(meta, batch_size=batch_size, seed=0, repeat=True,
                                                      augment=pipeline.Augment(jpeg_quality=jpeg_range))
    shard_files = [str(path) for path in sorted(records.glob("*.tfrecord"))]
    npy_files = [str(path) for path in sorted(npy_root.rglob("*.npy"))]

    def seed_reader():
        return _SequenceEpochs(seed_video_generator(str(npy_root), "Train", batch_size))

    shards = len(shard_files)
    return [
        # Augmentation runs on the accelerator (dfd.models.augmentation): the host only shuffles.
        Reader("training pipeline (shuffle)", training, shards, passes, steps),
        Reader("decode-only limit (the same, shuffle buffer 1)", limit_dataset(meta, batch_size), shards, passes,
               steps),
        Reader(f"training pipeline + JPEG re-compression {jpeg_range[0]}-{jpeg_range[1]}", recompressing, shards,
               passes, steps),
        Reader("seed VideoDataGenerator (np.load per clip)", seed_reader(), len(npy_files), passes),
        Reader("training pipeline, cold page cache", training, shards, passes, steps, evict=shard_files),
        Reader("seed VideoDataGenerator, cold page cache", seed_reader(), len(npy_files), passes, evict=npy_files),
    ]


def _report(values, readers: list[Reader], sides, resident_after_evict) -> None:
    print(f"{values.num_clips} clips of {values.num_frames}x{values.size}x{values.size}x3 "
          f"uint8 ({values.encoding}), batch {values.batch_size}; {values.rounds} interleaved rounds of one "
          f"warm-up and {values.passes} timed passes per reader")
    resident = "unknown (no mincore)" if resident_after_evict is None else f"{resident_after_evict:.0%}"
    print(f"cold: files evicted (posix_fadvise DONTNEED) before each pass, fresh tf.data iterator per pass; "
          f"page cache resident right after eviction: {resident}")
    for line in _rounds.table(sides, "clip", "us"):
        print(line)
    print(f"{'reader':<48} {'files':>6} {'disk KB/clip (median)':>22}")
    for reader in readers:
        print(f"{reader.name:<48} {reader.files:>6} {statistics.median(reader.disk_bytes_per_clip) / 1e3:>22.0f}")
    training, limit, jpeg, seed, training_cold, seed_cold = sides
    extra = (_rounds.cpu_per_item(jpeg).median - _rounds.cpu_per_item(training).median) * 1e6
    print(f"host JPEG re-compression (--augment_jpeg={values.jpeg_quality}): {extra:.0f} CPU us more per clip; "
          + _rounds.ratio_line("with / without", jpeg, training))
    print(_rounds.ratio_line("P3 warm training pipeline / seed generator", training, seed, ">= 1.5"))
    print(_rounds.ratio_line("P3 cold training pipeline / seed generator", training_cold, seed_cold, ">= 1.5")
          + " (CPU time leaves out the wait for the disk)")
    print(_rounds.ratio_line("P1 training pipeline / decode-only limit", training, limit, ">= 0.9"))


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    _rounds.check_rounds(values.rounds)
    print(_rounds.machine_line("before"), flush=True)
    with bench.work_folder(values.workdir, "pipeline") as root:
        records, npy_root = write_data(root, values.num_clips, values.num_frames, values.size,
                                       values.encoding, values.shards)
        readers = _readers(values, records, npy_root)
        every_file = [str(path) for path in sorted(records.glob("*.tfrecord"))] + [
            str(path) for path in sorted(npy_root.rglob("*.npy"))]
        evict_from_page_cache(every_file)
        # None: mincore unavailable; anything above 0 means the eviction did not work here.
        resident_after_evict = resident_fraction(every_file)
        sides = _rounds.interleave([reader.side() for reader in readers], values.rounds,
                                   progress=lambda line: print(line, flush=True))
    print(_rounds.machine_line("after"))
    _report(values, readers, sides, resident_after_evict)
