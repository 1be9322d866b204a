"""The tf.data input pipeline: a training and an evaluation entry over one parse-and-decode step.

    meta = open_dataset(data_dir)   # metadata.json, opened once by the entry point and passed on
    train, num_records, num_examples = make_train_dataset(meta, batch_size=32, frames_per_clip=None)
    val, num_val = make_eval_dataset(meta, "val", batch_size=32)

The trainer, tuner, evaluate, export and the benchmarks call these and never touch tf.data
themselves. Shards are listed from metadata.json and decoded by `decode_records` (over
dfd.data.schema, the one definition of the record format). Batches leave as (uint8 clips, int32
labels): clips are (B, T, H, W, 3) for video datasets and (B, H, W, 3) for image datasets, or for an
image model on video data (`frames_per_clip`, `frames`) (B, H, W, 3) frames of the clips. Scaling
to float happens in the model's first layer, on the accelerator, so the host moves 4x fewer bytes;
so does the training augmentation (flip, crop, colour, blur, noise, cutout:
dfd.models.augmentation), except JPEG re-compression, which has no accelerator kernel and runs here
when asked (`Augment`).

Order of the stages (training):
  shard files (shuffled) → interleave(TFRecordDataset), parallel → [--train_classes=real: drop
  fakes] → shuffle serialized records → batch → one map: decode_records on the whole batch (parse_example,
  decode_raw / batched JPEG decode), pseudo-fakes (dfd.data.pseudo_fakes, on whole decoded clips),
  frame sampling (K random frames per clip), JPEG re-compression (one random quality per clip)
  → prefetch.
With --cache the decoded examples are cached; the comment in `_train_folder` says why the cache sits
before the shuffle then. Evaluation reads the same interleave in a fixed order, keeps every example
(the last partial batch too) and never augments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from dfd.data import pseudo_fakes as pseudo_fakes_lib
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.training.config import NO_AUGMENT, SHUFFLE_BUFFER, TRAIN_CLASSES, Augment, parse_jpeg_quality  # noqa: F401  (users' imports)

AUTOTUNE = tf.data.AUTOTUNE

# Shards read at once: about one per core (more readers than cores thrash: measured 1.5x slower
# with 8 readers on 2 cores), at most 16. The record shuffle after the interleave does the mixing.
MAX_PARALLEL_SHARDS = 16


def parallel_shards(num_files: int) -> int:
    return max(1, min(num_files, MAX_PARALLEL_SHARDS, max(2, os.cpu_count() or 2)))


def recompress_jpeg(clips: tf.Tensor, quality_range: tuple[int, int], seed: int | None = None) -> tf.Tensor:
    """uint8 (B, T, H, W, 3) → the same, every frame JPEG-encoded and decoded at its clip's random quality.

    One graph-level map over the B*T frames (parallel iterations), never a Python loop; the quality
    is a tensor input of EncodeJpegVariableQuality, so it can differ per clip.
    """
    shape = tf.shape(clips)
    quality = tf.random.uniform(shape[:1], quality_range[0], quality_range[1] + 1, dtype=tf.int32, seed=seed)
    frames = tf.reshape(clips, tf.concat([[-1], shape[2:]], axis=0))
    qualities = tf.repeat(quality, shape[1])

    def one(args):
        frame, frame_quality = args
        encoded = tf.raw_ops.EncodeJpegVariableQuality(images=frame, quality=frame_quality)
        return tf.ensure_shape(tf.io.decode_jpeg(encoded, channels=3), frame.shape)

    recompressed = tf.map_fn(one, (frames, qualities), fn_output_signature=tf.TensorSpec(frames.shape[1:], tf.uint8),
                             parallel_iterations=64)
    return tf.reshape(recompressed, shape)


def sample_frames(clips: tf.Tensor, num_padded: tf.Tensor, frames_per_clip: int,
                  seed: int | None = None) -> tf.Tensor:
    """uint8 (B, T, H, W, 3) → (B, K, H, W, 3): K distinct random frames of each clip, vectorised.

    Each frame gets a uniform random key and the K largest keys win (top_k over (B, T), one gather),
    so frames are distinct and every batch draws anew. Padding (a short video's last frame repeated,
    `num_padded` (B,)) gets keys below every real frame: copies are taken only when a clip has fewer
    than K real frames.
    """
    num_frames = tf.shape(clips)[1]
    keys = tf.random.uniform(tf.shape(clips)[:2], seed=seed)
    real = tf.range(num_frames)[None, :] < (num_frames - tf.cast(num_padded, tf.int32))[:, None]
    keys = tf.where(real, keys, keys - 1.0)
    indices = tf.math.top_k(keys, k=frames_per_clip, sorted=False).indices
    return tf.gather(clips, indices, batch_dims=1)


def all_frames(clips: tf.Tensor, labels: tf.Tensor, num_padded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 (B, T, H, W, 3) → (N, H, W, 3) every real frame of the clips (padding dropped), labels repeated."""
    shape = tf.shape(clips)
    real = tf.range(shape[1])[None, :] < (shape[1] - tf.cast(num_padded, tf.int32))[:, None]    # (B, T)
    frames = tf.boolean_mask(clips, real)
    return frames, tf.boolean_mask(tf.repeat(labels[:, None], shape[1], axis=1), real)


def open_dataset(data_dir: str | Path) -> DatasetMetadata:
    """The metadata of the TFRecord folder `data_dir`, opened once by an entry point and passed on."""
    return DatasetMetadata.load(checked_dir(data_dir))


def output_shape(meta: DatasetMetadata, frames: bool = False) -> tuple[int, ...]:
    """Shape of one example as the pipeline emits it: (H, W, 3) for images, (T, H, W, 3) for video,
    (H, W, 3) for video read as frames (`frames`: make_train_dataset's frames_per_clip, make_eval_dataset's frames)."""
    return _example_shape(meta.preprocessing, frames)


def _example_shape(spec, frames: bool = False) -> tuple[int, ...]:
    clip_shape = spec.record_shape.clip_shape
    return clip_shape[1:] if spec.kind == "image" or frames else clip_shape


def checked_dir(data_dir) -> Path:
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
            e is not None and int(e) != a for e, a in zip(expected, example_shape, strict=False)):
        names = ("height", "width", "channels") if len(example_shape) == 3 else (
            "num_frames", "height", "width", "channels")
        mismatches = [f"{name}: data {a} != model {e}" for name, a, e in
                      zip(names, example_shape, expected, strict=False) if e is not None and int(e) != a]
        detail = "; ".join(mismatches) or f"rank: data {len(example_shape)} != model {len(expected)}"
        raise ValueError(
            f"{data_dir} holds examples of shape {example_shape} but the model expects {expected} "
            f"({detail}). Convert the data with matching --num_frames/--size, or pick a model "
            "for this data (image models need an image dataset or frames of video records with "
            "--frames_per_clip, video models a video dataset).")


def decode_records(serialized: tf.Tensor, shape, *, padded: bool = False, keypoints: bool = False,
                   sources: bool = False) -> dict:
    """The one parse-and-decode step of every reader: a batch (1-D string tensor) of serialized records →
    {schema.FRAMES: uint8 (B, T, H, W, 3), schema.LABEL: int32 (B,)}, and when asked schema.PADDED_FRAMES
    (int64 (B,), 0 for records written before it existed), schema.FACE_KEYPOINTS (pseudo-fakes' masks) and
    schema.SOURCE (the file each record came from).

    Only what is asked is parsed: whole clips need no per-record count, and the clip path stays as
    close to the decode limit as it can (P1 of dfd.bench pipeline).
    """
    features = schema.training_features(shape, keypoints=keypoints)
    if padded:
        features[schema.PADDED_FRAMES] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    if sources:
        features[schema.SOURCE] = tf.io.FixedLenFeature([], tf.string)
    decoded = tf.io.parse_example(serialized, features)
    decoded[schema.FRAMES] = schema.decode_frames(decoded[schema.FRAMES], shape)
    decoded[schema.LABEL] = tf.cast(decoded[schema.LABEL], tf.int32)
    return decoded


def _options(deterministic: bool, shard_files: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Each worker of a multi-worker run reads its own shard files (no worker reads a record twice).
    # With tf.data service the dispatcher shares out the files instead (dfd.data_service).
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if shard_files else tf.data.experimental.AutoShardPolicy.OFF)
    options.experimental_optimization.map_parallelization = True
    return options


def _records(files: list[str], *, shuffle: bool, seed: int | None, repeat: bool, deterministic: bool,
             classes: str = "all") -> tf.data.Dataset:
    """Serialized records of `files`, read in parallel (interleave), real ones only for classes="real"."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Repeating the file list (a new file order each epoch) rather than the batches keeps the record
    # shuffle buffer full across epoch boundaries: a buffer that drains at each epoch's end must
    # be refilled (reading `shuffle_buffer` records) before the next epoch's first batch, a stall the
    # accelerator waits through. The price: an epoch's last records may mix with the next epoch's
    # first ones, by at most `shuffle_buffer` records; steps per epoch stay count // batch_size.
    if repeat:
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
    return dataset


def make_eval_dataset(
    meta: DatasetMetadata,
    split: str,
    *,
    batch_size: int,
    frames: bool = False,
    cache: str = "none",
    expected_shape: tuple | None = None,
    shard_files: bool = True,
    details: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """Batches of (uint8 clips, int32 labels) of every record of `split`, in a fixed order, never augmented.

    frames: video records read as every real frame of each clip (padding dropped), about batch_size
        frames per batch (an image model on video data: frame-level validation and evaluation).
    cache: "none", "memory", or a directory for a file cache (decoded examples).
    expected_shape: the model's input shape (with or without batch dim); a mismatch is a ValueError.
    shard_files: in a multi-worker run each worker reads its own shard files; False makes every worker
        read all of them (validation: see dfd.train).
    details: batches of (clips, labels, sources, padded_frames) instead, clips always whole records
        (B, T, H, W, 3) (T=1 for images), sources the records' file names (bytes): for scoring per
        source video (dfd.evaluate, dfd.export's sample batch, Grad-CAM pictures).
    Returns the dataset and the number of records (clips or images) of the split (from metadata.json).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if frames and details:
        raise ValueError("details reads whole records; frames reads frames of them: ask for one")
    spec = meta.preprocessing
    shape = spec.record_shape
    clips_per_batch = _clips_per_batch("all", batch_size, False, spec, meta.directory) if frames else batch_size
    example_shape = _example_shape(spec, frames)
    if expected_shape is not None:
        _check_expected_shape(example_shape, expected_shape, meta.directory)
    files = [str(path) for path in meta.shard_paths(split)]   # ValueError when missing or empty
    num_examples = meta.count(split)
    dataset = _records(files, shuffle=False, seed=None, repeat=False, deterministic=True)

    def decode(serialized):
        return decode_records(serialized, shape, padded=frames or details, sources=details)

    def finish(decoded):
        clips, labels = decoded[schema.FRAMES], decoded[schema.LABEL]
        if details:
            return clips, labels, decoded[schema.SOURCE], decoded[schema.PADDED_FRAMES]
        if frames:
            return all_frames(clips, labels, decoded[schema.PADDED_FRAMES])
        if spec.kind == "image":   # one-frame records; image models take (B, H, W, 3). A reshape, not a copy.
            clips = tf.reshape(clips, (-1,) + example_shape)
        return clips, labels

    if cache == "none":
        dataset = dataset.batch(clips_per_batch).map(lambda serialized: finish(decode(serialized)),
                                                     num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.batch(256).map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
        dataset = dataset.cache("" if cache == "memory" else _cache_file(cache, meta.directory, split))
        dataset = dataset.batch(clips_per_batch).map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    # interleave hides the size; stating it lets Keras show a progress bar.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(
        steps_per_epoch(num_examples, clips_per_batch, training=False)))
    return dataset.prefetch(AUTOTUNE).with_options(_options(True, shard_files)), num_examples


def make_train_dataset(
    meta: DatasetMetadata,
    *,
    batch_size: int,
    extras: Sequence[DatasetMetadata] = (),
    frames_per_clip: int | None = None,
    cache: str = "none",
    augment: Augment | None = None,
    deterministic: bool = False,
    seed: int | None = None,
    expected_shape: tuple | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    repeat: bool = False,
    shard_files: bool = True,
    pseudo_fakes: pseudo_fakes_lib.PseudoFakes = pseudo_fakes_lib.NO_PSEUDO_FAKES,
    classes: str = "all",
    data_service: str = "",
) -> tuple[tf.data.Dataset, int, int]:
    """Training batches of (uint8 clips, int32 labels) of the train splits of `meta` and `extras` (--extra_train_data).

    Shuffles files and records, drops the last partial batch (static shapes for XLA) and applies the
    host `augment` (None: Augment(), the defaults).
    frames_per_clip: video records read as single frames, for an image model: K distinct random
        frames of each clip, new ones every epoch; a batch then holds batch_size // K clips, K frames
        each, and batch_size must be a multiple of K. With extras, image records give one frame each.
        None: whole clips.
    cache: "none", "memory", or a directory for a file cache (decoded examples, before augmentation).
    deterministic: fixed element order (slower: interleave waits for the slowest shard).
    expected_shape: the model's input shape (with or without batch dim); a mismatch is a ValueError.
    repeat: repeat forever (multi-worker training needs it; pass steps_per_epoch to fit).
    shard_files: in a multi-worker run each worker reads its own shard files (AutoShardPolicy.FILE).
    pseudo_fakes: turns a fraction of the real clips of each batch into self-blended fakes (label 1)
        right after decoding, before frame sampling.
    classes: "all", or "real" to read only the real examples (the SBI recipe trains on real faces
        and lets pseudo_fakes make the fakes).
    data_service: "grpc://HOST:PORT" of a tf.data service dispatcher: the workers run everything up
        to the augmentation and this process re-batches (dfd.data_service).

    With extras, each folder is read by the same stages (shard interleave, class filter, record
    shuffle, vectorised parse and decode, pseudo-fakes on whole decoded clips, frame sampling, JPEG)
    as single examples, and sample_from_datasets draws from them at random in proportion to their
    examples per epoch before the batching: every batch mixes the folders as the data does, whatever
    their sizes. (Batches of one folder at a time would give a small folder's examples whole batches
    of their own, a different class mix per step.) Without extras it is one folder's pipeline, the
    benchmarked path (P1 of dfd.bench pipeline).
    Returns the dataset, the records it reads per epoch (clips and images) and the examples (frames
    for an image model) per epoch: steps per epoch are examples // batch_size.
    """
    if augment is None:
        augment = Augment()
    options = dict(batch_size=batch_size, cache=cache, augment=augment, deterministic=deterministic,
                   expected_shape=expected_shape, shuffle_buffer=shuffle_buffer, repeat=repeat,
                   shard_files=shard_files, pseudo_fakes=pseudo_fakes, classes=classes)
    if not extras:
        dataset, num_records = _train_folder(meta, frames_per_clip=frames_per_clip, seed=seed,
                                             data_service=data_service, **options)
        return dataset, num_records, num_records * (frames_per_clip or 1)
    if data_service:
        raise ValueError("--extra_train_data cannot be combined with --data_service yet: the service distributes "
                         "one dataset's pipeline; convert the folders into one dataset, or train without the service")
    metas = [meta, *extras]
    check_extra_data(meta, list(extras), frames=frames_per_clip is not None)
    sources, num_records, num_examples = [], [], []
    for index, folder in enumerate(metas):
        frames = frames_per_clip if folder.preprocessing.kind == "video" else None
        # Folders of one name must not share a cache file (the cache file is named after the folder).
        source_cache = cache if cache in ("none", "memory") or index == 0 else os.path.join(cache, f"extra{index}")
        dataset, count = _train_folder(
            folder, frames_per_clip=frames, seed=None if seed is None else seed + 1000 * index,
            examples=True, **{**options, "cache": source_cache})
        sources.append(dataset)
        num_records.append(count)
        num_examples.append(count * (frames or 1))
    total = sum(num_examples)
    if total < batch_size:
        raise ValueError(f"the train splits of {', '.join(str(m.directory) for m in metas)} have {total} examples "
                         f"together, fewer than one batch of {batch_size}: lower --batch_size")
    # Drawn in proportion to the examples per epoch: an epoch shows each folder's examples about once
    # (exactly once without repeat: a finished folder is skipped until all are).
    dataset = tf.data.Dataset.sample_from_datasets(
        sources, weights=[count / total for count in num_examples], seed=seed, stop_on_empty_dataset=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(total // batch_size))
    return dataset.prefetch(AUTOTUNE), sum(num_records), total


def _train_folder(
    meta: DatasetMetadata,
    *,
    batch_size: int,
    frames_per_clip: int | None,
    cache: str,
    augment: Augment,
    deterministic: bool,
    seed: int | None,
    expected_shape: tuple | None,
    shuffle_buffer: int,
    repeat: bool,
    shard_files: bool,
    pseudo_fakes: pseudo_fakes_lib.PseudoFakes,
    classes: str,
    data_service: str = "",
    examples: bool = False,
) -> tuple[tf.data.Dataset, int]:
    """One folder's training pipeline (make_train_dataset's arguments): batches, or with `examples`
    single examples (the decoded batches unbatched, the last partial one kept) for the mix of folders,
    with no size check or stated cardinality. Returns it and the records it reads per epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data_dir = meta.directory
    spec = meta.preprocessing
    shape = spec.record_shape
    clips_per_batch = batch_size
    if frames_per_clip is not None:
        clips_per_batch = _clips_per_batch(frames_per_clip, batch_size, True, spec, data_dir)
    example_shape = _example_shape(spec, frames_per_clip is not None)
    if expected_shape is not None:
        _check_expected_shape(example_shape, expected_shape, data_dir)
    if classes not in TRAIN_CLASSES:
        raise ValueError(f"classes must be one of {TRAIN_CLASSES}, got {classes!r}")
    files = [str(path) for path in meta.shard_paths("train")]   # ValueError when missing or empty
    num_examples = meta.count("train") if classes == "all" else meta.class_counts("train").get("real", 0)
    if num_examples == 0:
        raise ValueError(f"split 'train' of {data_dir} has no real examples to train on "
                         "(--train_classes=real); use --train_classes=all")
    if num_examples < clips_per_batch and not examples:
        raise ValueError(f"split 'train' of {data_dir} has {num_examples} examples, fewer than "
                         f"one batch of {clips_per_batch}: lower --batch_size")
    served = bool(data_service)
    if served and cache != "none":
        raise ValueError("--cache cannot be combined with --data_service: the cache would live on the "
                         "service workers, for one epoch; drop --cache (the workers decode every epoch)")
    options = _options(deterministic, shard_files and not served)
    repeat_files = repeat and cache == "none" and not served   # served: repeated after distribution
    dataset = _records(files, shuffle=True, seed=seed, repeat=repeat_files, deterministic=deterministic,
                       classes=classes)

    blend = pseudo_fakes.enabled
    # One stateless seed per batch for the pseudo-fakes, drawn by a seeded op so --seed fixes them.
    blend_seed_max = tf.int64.max
    # Distinct op seeds: ops sharing one seed would draw the same numbers.
    sample_seed, jpeg_seed = (None, None) if seed is None else (seed + 1, seed + 2)

    def finish(decoded):
        """Per-batch work after decoding: pseudo-fakes, frame sampling, host augmentation, the image view.

        Pseudo-fakes act on whole decoded clips (the same blend on every frame), before the frame
        sampling, so that the frames drawn from a clip agree.
        """
        clips, labels = decoded[schema.FRAMES], decoded[schema.LABEL]
        if blend:
            batch_seed = tf.random.uniform([2], maxval=blend_seed_max, dtype=tf.int64, seed=seed)
            clips, labels = pseudo_fakes_lib.apply(clips, labels, decoded[schema.FACE_KEYPOINTS],
                                                   pseudo_fakes.fraction, batch_seed)
        if frames_per_clip is not None:
            clips = sample_frames(clips, decoded[schema.PADDED_FRAMES], frames_per_clip, sample_seed)
            labels = tf.repeat(labels, frames_per_clip)
        if augment.enabled:
            clips = recompress_jpeg(clips, augment.jpeg_quality, jpeg_seed)
        if spec.kind == "image" or frames_per_clip is not None:
            # Images are one-frame records; image models take (B, H, W, 3). A reshape, not a copy.
            clips = tf.reshape(clips, (-1,) + example_shape)
        return clips, labels

    def decode(serialized):
        # Keypoints travel with the clips only when pseudo-fakes need them; padding counts only for
        # frame sampling (which avoids a short video's padding).
        return decode_records(serialized, shape, padded=frames_per_clip is not None, keypoints=blend)

    shuffle_buffer = max(1, min(shuffle_buffer, num_examples))
    if cache == "none":
        # Shuffle the small serialized records, then batch, so parsing and decoding run once
        # per batch (vectorized) instead of once per record.
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # Served: each worker keeps its last partial batch; this process re-batches (dfd.data_service).
        dataset = dataset.batch(clips_per_batch, drop_remainder=not served and not examples)
        # Frame sampling and host augmentation run in the same map as the decoding, on the batch that
        # decode_raw just wrote (still in the CPU cache), instead of in a later map: one stage fewer
        # to schedule on 2 cores (measured: ~5 % less CPU per clip than a separate map for the old flip).
        dataset = dataset.map(lambda serialized: finish(decode(serialized)), num_parallel_calls=AUTOTUNE,
                              deterministic=deterministic)
    else:
        # Cache the DECODED examples one by one, then shuffle and batch after the cache. Caching
        # decoded batches instead would freeze the first epoch's batch composition forever (a
        # cache replays its input exactly): every later epoch would see the same clips together.
        # Decoding still runs batched (parse 256 at a time), and unbatching is nearly free.
        dataset = dataset.batch(256).map(decode, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
        dataset = dataset.cache("" if cache == "memory" else _cache_file(cache, data_dir, "train"))
        if repeat:   # after the cache (which must see one whole pass), before the shuffle (see above)
            dataset = dataset.repeat()
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(clips_per_batch, drop_remainder=not examples)
        # After the cache (which holds whole decoded clips): fresh pseudo-fakes, frames and
        # qualities every epoch.
        dataset = dataset.map(finish, num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    if examples:
        return dataset.unbatch().with_options(options), num_examples

    if served:
        from dfd import data_service as data_service_lib
        # The options travel with the dataset to the workers (non-deterministic order, parallel maps).
        dataset = data_service_lib.distribute(dataset.with_options(options), data_service, batch_size=batch_size,
                                              repeat=repeat)
    elif not repeat:
        # interleave hides the size; stating it lets Keras show a progress bar and end the epoch
        # without first running into the end of the data.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            steps_per_epoch(num_examples, clips_per_batch, training=True)))

    dataset = dataset.prefetch(AUTOTUNE)
    return dataset.with_options(options), num_examples


def check_extra_data(main: DatasetMetadata, extras: list[DatasetMetadata], frames: bool) -> None:
    """Refuses extra training folders (--extra_train_data) that the model of --data could not read alongside it.

    frames: the model is an image model (it reads video records as frames and image records whole),
    so every extra folder needs only the frame size of --data; else (a video model) each must hold
    video records of --data's shape (num_frames too).
    """
    spec = main.preprocessing
    height, width = spec.record_shape.clip_shape[1:3]
    for extra in extras:
        other = extra.preprocessing
        extra_height, extra_width = other.record_shape.clip_shape[1:3]
        if (extra_height, extra_width) != (height, width):
            raise ValueError(
                f"--extra_train_data folder {extra.directory} holds {extra_height}x{extra_width} frames but --data "
                f"{main.directory} holds {height}x{width} ones (height x width); convert it again at --data's size "
                f"(tools/make_tfrecords.py --frame_size={width} for videos, --image_size={width} for images)")
        if not frames and (other.kind, other.record_shape.num_frames) != (spec.kind, spec.record_shape.num_frames):
            raise ValueError(
                f"--extra_train_data folder {extra.directory} holds {other.kind} records of "
                f"{other.record_shape.num_frames} frame(s) but --data {main.directory} holds {spec.kind} records of "
                f"{spec.record_shape.num_frames}: a video model trains on clips of one length; convert it with "
                f"tools/make_tfrecords.py --frames={spec.record_shape.num_frames}, or train an image model (it reads "
                "frames of both)")


def _clips_per_batch(frames_per_clip, batch_size: int, training: bool, spec, data_dir) -> int:
    """Clips decoded per batch when reading frames: K per clip (training), or "all" of them (evaluation)."""
    if spec.kind != "video":
        raise ValueError(f"frames_per_clip reads frames of video records, and {data_dir} holds images; "
                         "leave --frames_per_clip unset for image data")
    num_frames = spec.record_shape.num_frames
    if frames_per_clip == "all":
        if training:
            raise ValueError("frames_per_clip='all' is for evaluation; training samples K random frames per clip")
        # About batch_size frames per batch, whatever the clip length: one clip at least.
        return max(1, batch_size // num_frames)
    if not isinstance(frames_per_clip, int) or not 1 <= frames_per_clip <= num_frames:
        raise ValueError(f"--frames_per_clip must be between 1 and the {num_frames} frames of each clip in "
                         f"{data_dir}, got {frames_per_clip!r}")
    if batch_size % frames_per_clip:
        raise ValueError(f"--batch_size={batch_size} must be a multiple of --frames_per_clip={frames_per_clip} "
                         f"(a batch holds batch_size / frames_per_clip clips, frames_per_clip frames of each)")
    return batch_size // frames_per_clip


def _cache_file(cache_dir: str, data_dir, split: str) -> str:
    """A cache file per dataset and split so two runs on different data never share one."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{Path(data_dir).resolve().name}-{split}.cache")


def steps_per_epoch(num_examples: int, batch_size: int, training: bool) -> int:
    """Training drops the last partial batch; evaluation keeps it."""
    return num_examples // batch_size if training else -(-num_examples // batch_size)
