"""The tf.data input pipeline on fake shards: dtypes, shapes, parse equality, augmentation, cache, errors."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from dfd.data import pipeline, schema
from dfd.data.metadata import DatasetMetadata
from dfd.testing.fake_shards import write_fake_dataset


@pytest.fixture(scope="module")
def video_raw(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("video_raw"), num_frames=3, size=16)


@pytest.fixture(scope="module")
def video_jpeg(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("video_jpeg"), num_frames=3, size=16, encoding="jpeg")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("images"), kind="image", size=16, encoding="jpeg")


def _digest(clip) -> str:
    return hashlib.sha1(np.ascontiguousarray(clip).tobytes()).hexdigest()


def _parsed_records(data_dir, split):
    """Every record of a split parsed one by one with the schema's per-record reader."""
    meta = DatasetMetadata.load(data_dir)
    shape = meta.preprocessing.record_shape
    for path in meta.shard_paths(split):
        for serialized in tf.data.TFRecordDataset(str(path)):
            yield schema.parse_example_numpy(serialized.numpy(), shape)


def _records_numpy(data_dir, split):
    """digest of every record's frames → its label."""
    return {_digest(parsed[schema.FRAMES]): int(parsed[schema.LABEL]) for parsed in _parsed_records(data_dir, split)}


def _collect(dataset, squeeze_image=False):
    out = {}
    for clips, labels in dataset:
        for clip, label in zip(clips.numpy(), labels.numpy(), strict=True):
            clip = clip[None] if squeeze_image else clip
            out[_digest(clip)] = int(label)
    return out


@pytest.mark.parametrize("fixture", ["video_raw", "video_jpeg"])
def test_batches_are_uint8_and_equal_per_record_parsing(fixture, request):
    data_dir = request.getfixturevalue(fixture)
    dataset, count = pipeline.make_eval_dataset(pipeline.open_dataset(data_dir), "val", batch_size=3)
    first_clips, first_labels = next(iter(dataset))
    assert first_clips.dtype == tf.uint8 and first_labels.dtype == tf.int32
    assert first_clips.shape == (3, 3, 16, 16, 3)
    assert count == 8
    # Evaluation keeps every example (a last partial batch included) and decodes them exactly.
    assert _collect(dataset) == _records_numpy(data_dir, "val")


def test_training_batches_are_full_and_images_drop_the_frame_axis(images):
    dataset, count, _ = pipeline.make_train_dataset(pipeline.open_dataset(images), batch_size=5, seed=1)
    shapes = [tuple(clips.shape) for clips, _ in dataset]
    assert shapes == [(5, 16, 16, 3)] * (count // 5)   # drop_remainder: static shapes for XLA
    assert pipeline.output_shape(pipeline.open_dataset(images)) == (16, 16, 3)
    evaluation, _ = pipeline.make_eval_dataset(pipeline.open_dataset(images), "val", batch_size=5)
    assert _collect(evaluation, squeeze_image=True) == _records_numpy(images, "val")


def test_training_shuffles_differently_each_epoch(video_raw):
    dataset, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=4, seed=3,
                                                augment=pipeline.NO_AUGMENT)
    epochs = [[_digest(c) for clips, _ in dataset for c in clips.numpy()] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1])   # the same examples ...
    assert epochs[0] != epochs[1]                   # ... in another order


@pytest.mark.parametrize("fixture,cache", [("video_raw", "none"), ("video_raw", "memory"), ("images", "none")])
def test_training_pipeline_hands_over_records_unchanged(fixture, cache, request):
    """The flip (and all other augmentation but JPEG) moved onto the accelerator (dfd.models.augmentation):
    by default the training pipeline delivers the records exactly, with their labels."""
    data_dir = request.getfixturevalue(fixture)
    originals = _records_numpy(data_dir, "train")
    dataset, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(data_dir), batch_size=4, seed=5, cache=cache)
    seen = _collect(dataset, squeeze_image=fixture == "images")
    assert seen == originals


def _frames_of_records(data_dir, split):
    """digest of every frame → (digest of its clip, label)."""
    return {_digest(frame): (_digest(parsed[schema.FRAMES]), int(parsed[schema.LABEL]))
            for parsed in _parsed_records(data_dir, split) for frame in parsed[schema.FRAMES]}


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_frames_per_clip_gives_k_distinct_random_frames_of_each_clip(video_raw, cache):
    frames_of = _frames_of_records(video_raw, "train")
    dataset, count, _ = pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=4, seed=2,
                                                    cache=cache, frames_per_clip=2, expected_shape=(None, 16, 16, 3))
    assert pipeline.output_shape(pipeline.open_dataset(video_raw), frames=True) == (16, 16, 3)
    epochs = []
    for _ in range(2):
        drawn = []
        for frames, labels in dataset:
            assert frames.shape == (4, 16, 16, 3) and frames.dtype == tf.uint8   # 2 clips x 2 frames
            digests = [_digest(frame) for frame in frames.numpy()]
            for digest, label in zip(digests, labels.numpy(), strict=True):
                assert frames_of[digest][1] == label
            for first, second in zip(digests[0::2], digests[1::2], strict=True):   # a clip's K frames lie together
                assert first != second and frames_of[first][0] == frames_of[second][0]
            drawn += digests
        assert len(drawn) == count * 2 and len({frames_of[d][0] for d in drawn}) == count   # every clip once
        epochs.append(set(drawn))
    assert epochs[0] != epochs[1]   # new frames every epoch


def test_frames_per_clip_all_reads_every_frame_in_order(video_raw):
    dataset, count = pipeline.make_eval_dataset(pipeline.open_dataset(video_raw), "val", batch_size=6, frames=True)
    batches = [(frames.numpy(), labels.numpy()) for frames, labels in dataset]
    assert all(len(frames) == 6 for frames, _ in batches[:-1])   # 6 // 3 = 2 clips per batch
    seen = {_digest(frame): int(label)
            for frames, labels in batches for frame, label in zip(frames, labels, strict=True)}
    assert seen == {digest: label for digest, (_, label) in _frames_of_records(video_raw, "val").items()}
    assert len(seen) == count * 3


def test_frame_sampling_skips_padding_and_all_frames_drops_it():
    clips = np.arange(2 * 4, dtype=np.uint8).reshape(2, 4, 1, 1, 1) * np.ones((1, 1, 2, 2, 3), np.uint8)
    padded = tf.constant([2, 0], tf.int64)   # clip 0: frames 2 and 3 repeat frame 1
    for seed in range(5):
        sampled = pipeline.sample_frames(tf.constant(clips), padded, 2, seed=seed).numpy()[:, :, 0, 0, 0]
        assert sorted(sampled[0]) == [0, 1] and len(set(sampled[1])) == 2
    frames, labels = pipeline.all_frames(tf.constant(clips), tf.constant([0, 1]), padded)
    assert frames.numpy()[:, 0, 0, 0].tolist() == [0, 1, 4, 5, 6, 7] and labels.numpy().tolist() == [0, 0, 1, 1, 1, 1]


def test_frames_per_clip_errors(video_raw, images):
    with pytest.raises(ValueError, match="holds images"):
        pipeline.make_train_dataset(pipeline.open_dataset(images), batch_size=4, frames_per_clip=1)
    with pytest.raises(ValueError, match="between 1 and the 3 frames"):
        pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=4, frames_per_clip=4)
    with pytest.raises(ValueError, match="multiple of --frames_per_clip=3"):
        pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=4, frames_per_clip=3)


def test_jpeg_recompression_is_one_quality_per_clip_in_eager_and_in_tf_data():
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (6, 1, 4, 4, 3), dtype=np.uint8), 4, axis=2), 4, axis=3)
    clips = np.repeat(smooth, 3, axis=1)   # 6 clips of 3 identical 16x16 frames
    for run in (lambda: pipeline.recompress_jpeg(tf.constant(clips), (5, 40), seed=1),
                # inside tf.data too: graph and eager code paths can differ
                lambda: next(iter(tf.data.Dataset.from_tensors(clips).map(
                    lambda c: pipeline.recompress_jpeg(c, (5, 40), seed=1))))):
        out = run().numpy()
        assert out.dtype == np.uint8 and out.shape == clips.shape
        assert (out == out[:, :1]).all()                    # the same quality for every frame of a clip
        assert (out != clips).any(axis=(1, 2, 3, 4)).all()  # every clip re-compressed
        assert np.abs(out.astype(int) - clips).mean() < 40  # and still the same picture


def test_jpeg_option_parses_and_checks_its_range():
    assert pipeline.parse_jpeg_quality("none") is None and pipeline.parse_jpeg_quality("30,95") == (30, 95)
    with pytest.raises(ValueError, match="LOW,HIGH"):
        pipeline.parse_jpeg_quality("high")
    with pytest.raises(ValueError, match="1 <= LOW <= HIGH <= 100"):
        pipeline.parse_jpeg_quality("90,30")


def test_training_pipeline_recompresses_and_evaluation_never_augments(video_raw):
    strong = pipeline.Augment(jpeg_quality=(5, 20))
    training, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=4, augment=strong, seed=1)
    assert not set(_collect(training)) & set(_records_numpy(video_raw, "train"))
    dataset, _ = pipeline.make_eval_dataset(pipeline.open_dataset(video_raw), "val", batch_size=4)
    assert _collect(dataset) == _records_numpy(video_raw, "val")


@pytest.mark.parametrize("cache", ["memory", "DIR"])
def test_cache_modes_give_the_same_examples(cache, video_jpeg, tmp_path):
    cache_arg = str(tmp_path / "cache") if cache == "DIR" else cache
    expected = _records_numpy(video_jpeg, "train")
    dataset, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(video_jpeg), batch_size=4, cache=cache_arg,
                                                augment=pipeline.NO_AUGMENT, seed=5)
    first = [_digest(c) for clips, _ in dataset for c in clips.numpy()]
    second = [_digest(c) for clips, _ in dataset for c in clips.numpy()]   # served from the cache
    assert set(first) == set(second) == set(expected)
    assert first != second   # the shuffle sits after the cache: batches differ between epochs
    if cache == "DIR":
        assert any((tmp_path / "cache").iterdir())
    evaluation, _ = pipeline.make_eval_dataset(pipeline.open_dataset(video_jpeg), "train", batch_size=4,
                                               cache=cache_arg)
    assert _collect(evaluation) == expected


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        pipeline.open_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="metadata.json is missing"):
        pipeline.open_dataset(tmp_path)


def test_empty_or_absent_split_is_a_clear_error(tmp_path):
    data_dir = write_fake_dataset(tmp_path, counts={"train": (2, 2), "val": (0, 0)})
    with pytest.raises(ValueError, match="empty"):
        pipeline.make_eval_dataset(pipeline.open_dataset(data_dir), "val", batch_size=2)
    with pytest.raises(ValueError, match="no 'test' split"):
        pipeline.make_eval_dataset(pipeline.open_dataset(data_dir), "test", batch_size=2)
    with pytest.raises(ValueError, match="lower --batch_size"):
        pipeline.make_train_dataset(pipeline.open_dataset(data_dir), batch_size=8)


def test_shape_mismatch_names_the_differences(video_raw):
    with pytest.raises(ValueError, match=r"num_frames: data 3 != model 16; height: data 16 != model 64"):
        pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=2, expected_shape=(None, 16, 64, 64,
                                    3))
    with pytest.raises(ValueError, match="image models need an image dataset"):
        pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=2, expected_shape=(16, 16, 3))
    # A matching shape (with the Keras batch dimension) passes.
    pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=2, expected_shape=(None, 3, 16, 16, 3))


def test_multi_worker_file_sharding_gives_each_worker_its_own_files(video_raw):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset
    dataset, _, _ = pipeline.make_train_dataset(pipeline.open_dataset(video_raw), batch_size=2,
                                                augment=pipeline.NO_AUGMENT, seed=0)
    # The same rewrite MultiWorkerMirroredStrategy applies to each of two workers.
    seen = [set(_collect(_AutoShardDataset(dataset, 2, index))) for index in range(2)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(_records_numpy(video_raw, "train"))
