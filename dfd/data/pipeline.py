"""The tf.data input pipeline: one function turns a TFRecord folder's split into batches.

    dataset, num_examples = make_dataset(data_dir, "train", batch_size=32, training=True)

The trainer, tuner, evaluate and the benchmarks call `make_dataset` and never touch tf.data
themselves. Shards are listed from metadata.json and decoded with dfd.data.schema, the one
definition of the record format. Batches leave as (uint8 clips, int32 labels): clips are
(B, T, H, W, 3) for video datasets and (B, H, W, 3) for image datasets. Scaling to float happens
in the model's first layer, on the accelerator, so the host moves 4x fewer bytes.

Order of the stages (training):
  shard files (shuffled) → interleave(TFRecordDataset), parallel → [--train_classes=real: drop
  fakes] → shuffle serialized records → batch → one map: parse_example on the whole batch, decode
  (decode_raw / batched JPEG decode), pseudo-fakes (dfd.data.pseudo_fakes, on whole clips),
  augmentation (one random transform per clip) → prefetch.
With --cache the decoded examples are cached; the comment in `make_dataset` says why the cache sits before
the shuffle then.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import tensorflow as tf

from dfd.data import pseudo_fakes as pseudo_fakes_lib
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata

AUTOTUNE = tf.data.AUTOTUNE
TRAIN_CLASSES = ("all", "real")

# Serialized records held for shuffling. Raw 16x64x64 clips are ~200 KB, so 1024 of them are
# ~200 MB of host memory: enough mixing across the interleaved shards without hoarding RAM.
DEFAULT_SHUFFLE_BUFFER = 1024
# Shards read at once: about one per core (more readers than cores thrash: measured 1.5x slower
# with 8 readers on 2 cores), at most 16. The record shuffle after the interleave does the mixing.
MAX_PARALLEL_SHARDS = 16


def parallel_shards(num_files: int) -> int:
    return max(1, min(num_files, MAX_PARALLEL_SHARDS, max(2, os.cpu_count() or 2)))


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation, drawn once per clip and applied to every frame of it.

    flip: horizontal flip with probability 1/2. brightness: add a delta drawn from
    [-brightness, brightness] (fraction of 255). contrast: scale around the clip's mean by a factor
    drawn from [1 - contrast, 1 + contrast]. 0 / False turns an op off.
    """

    flip: bool = True
    # Off by default: photometric changes need float math over every pixel, which on a CPU host
    # costs more than reading and decoding the clip (bench pipeline: ~300 clips/s on one core).
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.brightness < 1.0:
            raise ValueError(f"brightness must be in [0, 1), got {self.brightness}")
        if not 0.0 <= self.contrast < 1.0:
            raise ValueError(f"contrast must be in [0, 1), got {self.contrast}")

    @property
    def enabled(self) -> bool:
        return self.flip or self.brightness > 0 or self.contrast > 0


NO_AUGMENT = Augment(flip=False, brightness=0.0, contrast=0.0)


def augment_clips(clips: tf.Tensor, augment: Augment, seed: int | None = None) -> tf.Tensor:
    """uint8 (B, T, H, W, 3) → uint8, one flip/brightness/contrast per clip (same for all its frames).

    The random numbers are drawn per clip with shape (B, 1, 1, 1, 1) and broadcast over frames,
    which is what keeps a clip temporally consistent (per-frame flips would be a strong fake cue).
    """
    if not augment.enabled:
        return clips
    batch = tf.shape(clips)[0]
    # Distinct op seeds: ops sharing one seed would draw the same numbers (flip tied to brightness).
    seeds = (None, None, None) if seed is None else (seed, seed + 1, seed + 2)
    per_clip = tf.stack([batch, 1, 1, 1, 1])
    if augment.flip:
        # Each clip is mirrored with probability 1/2. Training batches come out of a shuffle, so a
        # clip's position in its batch is random and mirroring the first k ~ Binomial(B, 1/2) clips
        # is the same as mirroring a random subset, at the cost of one reverse and one concat
        # (a broadcast tf.where over the whole batch was 8x slower on CPU, a per-clip tf.gather of
        # width indices 2x slower, tf.reverse_sequence 10x slower).
        clips = _flip_prefix(clips, tf.reduce_sum(
            tf.cast(tf.random.uniform([batch], seed=seeds[0]) < 0.5, tf.int32)))
    if augment.brightness <= 0 and augment.contrast <= 0:
        return clips
    values = tf.cast(clips, tf.float32)
    if augment.contrast > 0:
        factor = tf.random.uniform(per_clip, 1.0 - augment.contrast, 1.0 + augment.contrast, seed=seeds[1])
        mean = tf.reduce_mean(values, axis=[1, 2, 3], keepdims=True)   # per clip and channel
        values = (values - mean) * factor + mean
    if augment.brightness > 0:
        delta = tf.random.uniform(per_clip, -augment.brightness, augment.brightness, seed=seeds[2])
        values = values + delta * 255.0
    # Round and saturate back to uint8: batches always leave the pipeline as uint8.
    return tf.cast(tf.clip_by_value(tf.round(values), 0.0, 255.0), tf.uint8)


def _flip_prefix(clips: tf.Tensor, num_flipped: tf.Tensor) -> tf.Tensor:
    """Mirrors (reverses the width axis of) the first `num_flipped` clips of (B, ..., H, W, 3).

    The clips are viewed as rows of (W, 3) pixels for the reverse: TensorFlow's CPU kernel has a
    fast path for reversing the middle axis of a 3-D tensor with 3 channels (a row-wise copy), while
    the same reverse on the 5-D (B, T, H, W, 3) view goes through the generic per-element kernel,
    3x slower (bench: ~54 vs ~175 CPU us per flipped 16x64x64 clip).
    """
    shape = tf.shape(clips)
    flipped = tf.reshape(clips[:num_flipped], tf.stack([-1, shape[-2], shape[-1]]))
    flipped = tf.reshape(tf.reverse(flipped, axis=[1]), tf.concat([[num_flipped], shape[1:]], axis=0))
    return tf.concat([flipped, clips[num_flipped:]], axis=0)


def output_shape(data_dir: str | Path) -> tuple[int, ...]:
    """Shape of one example as the pipeline emits it: (H, W, 3) for images, (T, H, W, 3) for video."""
    spec = DatasetMetadata.load(_checked_dir(data_dir)).preprocessing
    return _example_shape(spec)


def _example_shape(spec) -> tuple[int, ...]:
    clip_shape = spec.record_shape.clip_shape
    return clip_shape[1:] if spec.kind == "image" else clip_shape


def _checked_dir(data_dir) -> Path:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"dataset folder {data_dir} does not exist. Convert a dataset first: "
                         "python tools/make_tfrecords.py --source=DIR --output=DIR, then pass --data=DIR")
    return data_dir


def _check_expected_shape(example_shape, expected_shape, data_dir) -> None:
    expected = tuple(expected_shape)
    if len(expected) == len(example_shape) + 1:   # a Keras input shape with its batch dimension
        expected = expected[1:]
    if len(expected) != len(example_shape) or any(
            e is not None and int(e) != a for e, a in zip(expected, example_shape)):
        names = ("height", "width", "channels") if len(example_shape) == 3 else (
            "num_frames", "height", "width", "channels")
        mismatches = [f"{name}: data {a} != model {e}"
                      for name, a, e in zip(names, example_shape, expected) if e is not None and int(e) != a]
        detail = "; ".join(mismatches) or f"rank: data {len(example_shape)} != model {len(expected)}"
        raise ValueError(
            f"{data_dir} holds examples of shape {example_shape} but the model expects {expected} "
            f"({detail}). Convert the data with matching --num_frames/--size, or pick a model "
            "for this data (image models need an image dataset, video models a video dataset).")


def make_dataset(
    data_dir: str | Path,
    split: str,
    *,
    batch_size: int,
    training: bool,
    cache: str = "none",
    augment: Augment = Augment(),
    deterministic: bool = False,
    seed: int | None = None,
    expected_shape: tuple | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    repeat: bool = False,
    shard_files: bool = True,
    pseudo_fakes: pseudo_fakes_lib.PseudoFakes = pseudo_fakes_lib.NO_PSEUDO_FAKES,
    classes: str = "all",
    data_service: str = "",
) -> tuple[tf.data.Dataset, int]:
    """Batches of (uint8 clips, int32 labels) for `split` of the TFRecord folder `data_dir`.

    training: shuffle files and records, drop the last partial batch (static shapes for XLA) and
        augment with `augment`; evaluation reads in order, keeps every example and never augments.
    cache: "none", "memory", or a directory for a file cache (decoded examples, before augmentation).
    deterministic: fixed element order even while training (slower: interleave waits for the
        slowest shard). Evaluation is always deterministic.
    expected_shape: the model's input shape (with or without batch dim); a mismatch is a ValueError.
    repeat: repeat forever (multi-worker training needs it; pass steps_per_epoch to fit).
    shard_files: in a multi-worker run each worker reads its own shard files (AutoShardPolicy.FILE);
        False makes every worker read all of them (validation: see dfd.train).
    pseudo_fakes: training only; turns a fraction of the real clips of each batch into
        self-blended fakes (label 1) right after decoding, before augmentation.
    classes: "all", or "real" to read only the real examples (the SBI recipe trains on real faces
        and lets pseudo_fakes make the fakes).
    data_service: training only; "grpc://HOST:PORT" of a tf.data service dispatcher: the workers
        run everything up to the augmentation and this process re-batches (dfd.data_service).
    Returns the dataset and the number of examples it reads from the split (from metadata.json).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    meta = DatasetMetadata.load(_checked_dir(data_dir))
    spec = meta.preprocessing
    shape = spec.record_shape
    example_shape = _example_shape(spec)
    if expected_shape is not None:
        _check_expected_shape(example_shape, expected_shape, data_dir)
    if classes not in TRAIN_CLASSES:
        raise ValueError(f"classes must be one of {TRAIN_CLASSES}, got {classes!r}")
    files = [str(path) for path in meta.shard_paths(split)]   # ValueError when missing or empty
    num_examples = meta.count(split) if classes == "all" else meta.class_counts(split).get("real", 0)
    if num_examples == 0:
        raise ValueError(f"split '{split}' of {data_dir} has no real examples to train on "
                         "(--train_classes=real); use --train_classes=all")
    if training and num_examples < batch_size:
        raise ValueError(f"split '{split}' of {data_dir} has {num_examples} examples, fewer than "
                         f"one batch of {batch_size}: lower --batch_size")
    deterministic = deterministic or not training
    served = training and bool(data_service)
    if served and cache != "none":
        raise ValueError("--cache cannot be combined with --data_service: the cache would live on the "
                         "service workers, for one epoch; drop --cache (the workers decode every epoch)")

    options = tf.data.Options()
    options.deterministic = deterministic
    # Each worker of a multi-worker run reads its own shard files (no worker reads a record twice).
    # With tf.data service the dispatcher shares out the files instead (dfd.data_service).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if shard_files and not served
        else tf.data.experimental.AutoShardPolicy.OFF)
    options.experimental_optimization.map_parallelization = True

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Repeating the file list (a new file order each epoch) rather than the batches keeps the record
    # shuffle buffer full across epoch boundaries: a buffer that drains at each epoch's end must
    # be refilled (reading `shuffle_buffer` records) before the next epoch's first batch, a stall the
    # accelerator waits through. The price: an epoch's last records may mix with the next epoch's
    # first ones, by at most `shuffle_buffer` records; steps per epoch stay count // batch_size.
    repeat_files = repeat and cache == "none" and not served   # served: repeated after distribution
    if repeat_files:
        dataset = dataset.repeat()
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=parallel_shards(len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic)
    if classes == "real":
        # Per serialized record, parsing only its label: cheap next to decoding, and it keeps the
        # shuffle buffer and the cache free of records that would be thrown away.
        label_only = {schema.LABEL: tf.io.FixedLenFeature([], tf.int64)}
        dataset = dataset.filter(lambda record: tf.io.parse_single_example(record, label_only)[schema.LABEL] == 0)

    augment_batches = training and augment.enabled
    blend = training and pseudo_fakes.enabled
    # One stateless seed per batch for the pseudo-fakes, drawn by a seeded op so --seed fixes them.
    blend_seed_max = tf.int64.max

    def finish(clips, labels, keypoints=None):
        """Per-batch work after decoding: pseudo-fakes and augmentation (training), the image view."""
        if blend:
            # On whole decoded clips, before any augmentation: SBI blends the face as it was cropped.
            batch_seed = tf.random.uniform([2], maxval=blend_seed_max, dtype=tf.int64, seed=seed)
            clips, labels = pseudo_fakes_lib.apply(clips, labels, keypoints, pseudo_fakes.fraction, batch_seed)
        if augment_batches:
            clips = augment_clips(clips, augment, seed)
        if spec.kind == "image":
            # Images are one-frame records; image models take (B, H, W, 3). A reshape, not a copy.
            clips = tf.reshape(clips, (-1,) + example_shape)
        return clips, labels

    def parse_and_decode(serialized):
        parsed = schema.parse_batch(serialized, shape, keypoints=blend)
        clips = schema.decode_frames(parsed[schema.FRAMES], shape)
        labels = tf.cast(parsed[schema.LABEL], tf.int32)
        # Keypoints travel with the clips only when pseudo-fakes need them.
        return (clips, labels, parsed[schema.FACE_KEYPOINTS]) if blend else (clips, labels)

    def parse_decode_finish(serialized):
        return finish(*parse_and_decode(serialized))

    shuffle_buffer = max(1, min(shuffle_buffer, num_examples))
    if cache == "none":
        # Shuffle the small serialized records, then batch, so parsing and decoding run once
        # per batch (vectorized) instead of once per record.
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # Served: each worker keeps its last partial batch; this process re-batches (dfd.data_service).
        dataset = dataset.batch(batch_size, drop_remainder=training and not served)
        # Augmentation runs in the same map as the decoding, on the batch that decode_raw just
        # wrote (still in the CPU cache), instead of in a later map: one stage fewer to schedule
        # on 2 cores, and the flip reads hot memory (measured: ~5 % less CPU per clip than a separate map).
        dataset = dataset.map(parse_decode_finish, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        # Cache the DECODED examples one by one, then shuffle and batch after the cache. Caching
        # decoded batches instead would freeze the first epoch's batch composition forever (a
        # cache replays its input exactly): every later epoch would see the same clips together.
        # Decoding still runs batched (parse 256 at a time), and unbatching is nearly free.
        dataset = dataset.batch(256).map(parse_and_decode, num_parallel_calls=AUTOTUNE,
                                         deterministic=True).unbatch()
        dataset = dataset.cache("" if cache == "memory" else _cache_file(cache, data_dir, split))
        if repeat:   # after the cache (which must see one whole pass), before the shuffle (see above)
            dataset = dataset.repeat()
        if training:
            dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size, drop_remainder=training)
        # After the cache (which holds un-augmented examples): a fresh flip and fresh pseudo-fakes every epoch.
        dataset = dataset.map(finish, num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    if served:
        from dfd import data_service as data_service_lib
        # The options travel with the dataset to the workers (non-deterministic order, parallel maps).
        dataset = data_service_lib.distribute(dataset.with_options(options), data_service, batch_size=batch_size,
                                              repeat=repeat)
    elif not repeat:
        # interleave hides the size; stating it lets Keras show a progress bar and end the epoch
        # without first running into the end of the data.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            steps_per_epoch(num_examples, batch_size, training)))

    dataset = dataset.prefetch(AUTOTUNE)
    return dataset.with_options(options), num_examples


def _cache_file(cache_dir: str, data_dir, split: str) -> str:
    """A cache file per dataset and split so two runs on different data never share one."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{Path(data_dir).resolve().name}-{split}.cache")


def steps_per_epoch(num_examples: int, batch_size: int, training: bool) -> int:
    """Training drops the last partial batch; evaluation keeps it."""
    return num_examples // batch_size if training else -(-num_examples // batch_size)
