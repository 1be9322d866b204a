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


def _records_numpy(data_dir, split):
    """Every record of a split parsed one by one with the schema's per-record reader."""
    meta = DatasetMetadata.load(data_dir)
    shape = meta.preprocessing.record_shape
    out = {}
    for path in meta.shard_paths(split):
        for serialized in tf.data.TFRecordDataset(str(path)):
            parsed = schema.parse_example_numpy(serialized.numpy(), shape)
            out[_digest(parsed[schema.FRAMES])] = int(parsed[schema.LABEL])
    return out


def _collect(dataset, squeeze_image=False):
    out = {}
    for clips, labels in dataset:
        for clip, label in zip(clips.numpy(), labels.numpy()):
            clip = clip[None] if squeeze_image else clip
            out[_digest(clip)] = int(label)
    return out


@pytest.mark.parametrize("fixture", ["video_raw", "video_jpeg"])
def test_batches_are_uint8_and_equal_per_record_parsing(fixture, request):
    data_dir = request.getfixturevalue(fixture)
    dataset, count = pipeline.make_dataset(data_dir, "val", batch_size=3, training=False)
    first_clips, first_labels = next(iter(dataset))
    assert first_clips.dtype == tf.uint8 and first_labels.dtype == tf.int32
    assert first_clips.shape == (3, 3, 16, 16, 3)
    assert count == 8
    # Evaluation keeps every example (a last partial batch included) and decodes them exactly.
    assert _collect(dataset) == _records_numpy(data_dir, "val")


def test_training_batches_are_full_and_images_drop_the_frame_axis(images):
    dataset, count = pipeline.make_dataset(images, "train", batch_size=5, training=True, seed=1)
    shapes = [tuple(clips.shape) for clips, _ in dataset]
    assert shapes == [(5, 16, 16, 3)] * (count // 5)   # drop_remainder: static shapes for XLA
    assert pipeline.output_shape(images) == (16, 16, 3)
    evaluation, _ = pipeline.make_dataset(images, "val", batch_size=5, training=False)
    assert _collect(evaluation, squeeze_image=True) == _records_numpy(images, "val")


def test_training_shuffles_differently_each_epoch(video_raw):
    dataset, _ = pipeline.make_dataset(video_raw, "train", batch_size=4, training=True, seed=3,
                                       augment=pipeline.NO_AUGMENT)
    epochs = [[_digest(c) for clips, _ in dataset for c in clips.numpy()] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1])   # the same examples ...
    assert epochs[0] != epochs[1]                   # ... in another order


def test_augmentation_is_one_transform_per_clip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 1, 8, 8, 3), dtype=np.uint8)
    clips = np.repeat(frame, 4, axis=1)   # 16 clips whose 4 frames are identical
    augment = pipeline.Augment(flip=True, brightness=0.2, contrast=0.2)
    for run in (lambda: pipeline.augment_clips(tf.constant(clips), augment),
                # inside tf.data too: graph and eager code paths can differ
                lambda: next(iter(tf.data.Dataset.from_tensors(clips).map(
                    lambda c: pipeline.augment_clips(c, augment))))):
        out = run().numpy()
        assert out.dtype == np.uint8 and out.shape == clips.shape
        assert (out == out[:, :1]).all()            # every frame of a clip got the same transform
        assert (out != clips).any(axis=(1, 2, 3, 4)).sum() >= 12   # and clips were transformed


def test_flip_only_mirrors_whole_clips():
    clips = np.arange(2 * 3 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 3, 4, 5, 3)
    out = pipeline.augment_clips(tf.constant(np.repeat(clips, 10, axis=0)),
                                 pipeline.Augment(flip=True, brightness=0.0, contrast=0.0)).numpy()
    for index, clip in enumerate(out):
        original = clips[index // 10]
        assert (clip == original).all() or (clip == original[:, :, ::-1]).all()


def test_no_augmentation_at_evaluation(video_raw):
    strong = pipeline.Augment(flip=True, brightness=0.5, contrast=0.5)
    dataset, _ = pipeline.make_dataset(video_raw, "val", batch_size=4, training=False, augment=strong)
    assert _collect(dataset) == _records_numpy(video_raw, "val")


@pytest.mark.parametrize("cache", ["memory", "DIR"])
def test_cache_modes_give_the_same_examples(cache, video_jpeg, tmp_path):
    cache_arg = str(tmp_path / "cache") if cache == "DIR" else cache
    expected = _records_numpy(video_jpeg, "train")
    dataset, _ = pipeline.make_dataset(video_jpeg, "train", batch_size=4, training=True, cache=cache_arg,
                                       augment=pipeline.NO_AUGMENT, seed=5)
    first = [_digest(c) for clips, _ in dataset for c in clips.numpy()]
    second = [_digest(c) for clips, _ in dataset for c in clips.numpy()]   # served from the cache
    assert set(first) == set(second) == set(expected)
    assert first != second   # the shuffle sits after the cache: batches differ between epochs
    if cache == "DIR":
        assert any((tmp_path / "cache").iterdir())
    evaluation, _ = pipeline.make_dataset(video_jpeg, "train", batch_size=4, training=False, cache=cache_arg)
    assert _collect(evaluation) == expected


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        pipeline.make_dataset(tmp_path / "nope", "train", batch_size=2, training=True)
    with pytest.raises(ValueError, match="metadata.json is missing"):
        pipeline.make_dataset(tmp_path, "train", batch_size=2, training=True)


def test_empty_or_absent_split_is_a_clear_error(tmp_path):
    data_dir = write_fake_dataset(tmp_path, counts={"train": (2, 2), "val": (0, 0)})
    with pytest.raises(ValueError, match="empty"):
        pipeline.make_dataset(data_dir, "val", batch_size=2, training=False)
    with pytest.raises(ValueError, match="no 'test' split"):
        pipeline.make_dataset(data_dir, "test", batch_size=2, training=False)
    with pytest.raises(ValueError, match="lower --batch_size"):
        pipeline.make_dataset(data_dir, "train", batch_size=8, training=True)


def test_shape_mismatch_names_the_differences(video_raw):
    with pytest.raises(ValueError, match=r"num_frames: data 3 != model 16; height: data 16 != model 64"):
        pipeline.make_dataset(video_raw, "train", batch_size=2, training=True,
                              expected_shape=(None, 16, 64, 64, 3))
    with pytest.raises(ValueError, match="image models need an image dataset"):
        pipeline.make_dataset(video_raw, "train", batch_size=2, training=True, expected_shape=(16, 16, 3))
    # A matching shape (with the Keras batch dimension) passes.
    pipeline.make_dataset(video_raw, "train", batch_size=2, training=True, expected_shape=(None, 3, 16, 16, 3))


def test_multi_worker_file_sharding_gives_each_worker_its_own_files(video_raw):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset
    dataset, _ = pipeline.make_dataset(video_raw, "train", batch_size=2, training=True,
                                       augment=pipeline.NO_AUGMENT, seed=0)
    # The same rewrite MultiWorkerMirroredStrategy applies to each of two workers.
    seen = [set(_collect(_AutoShardDataset(dataset, 2, index))) for index in range(2)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(_records_numpy(video_raw, "train"))
