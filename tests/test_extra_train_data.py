"""--extra_train_data: more folders' train splits join --data's training set (pipeline mix, trainer, run state)."""

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dfd import train_flags
from dfd.data import pipeline, pseudo_fakes, schema
from dfd.data.metadata import DatasetMetadata
from dfd.run_layout import RunLayout
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train
from dfd.training.setup import class_weights

IMAGE_TINY = {"conv_filters": "4", "kernel_sizes": "3", "dense_units": 4}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("videos"), num_frames=3, size=16,
                              counts={"train": (4, 4), "val": (2, 2)})


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Images of the videos' frame size (different pixels: another seed), no val split: training only."""
    return write_fake_dataset(tmp_path_factory.mktemp("photos"), kind="image", size=16, encoding="jpeg",
                              counts={"train": (4, 4)}, seed=1)


def _digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _frames_by_source(data_dir, source):
    """{digest of a frame: (source, label)} and {digest of its top row: source} for every train record."""
    meta = DatasetMetadata.load(data_dir)
    frames, top_rows = {}, {}
    for path in meta.shard_paths("train"):
        for serialized in tf.data.TFRecordDataset(str(path)):
            parsed = schema.parse_example_numpy(serialized.numpy(), meta.preprocessing.record_shape)
            for frame in parsed[schema.FRAMES].reshape((-1, 16, 16, 3)):
                frames[_digest(frame)] = (source, int(parsed[schema.LABEL]))
                top_rows[_digest(frame[0])] = source
    return frames, top_rows


def _train_sets(main, extra, **options):
    """make_train_dataset on the folder `main` with the folder `extra` (--data and --extra_train_data)."""
    return pipeline.make_train_dataset(pipeline.open_dataset(main), extras=[pipeline.open_dataset(extra)], **options)


def _examples(dataset):
    return [(frame, int(label)) for frames, labels in dataset
            for frame, label in zip(frames.numpy(), labels.numpy(), strict=True)]


def test_one_epoch_mixes_both_folders_and_shows_every_example_once(videos, photos):
    dataset, records, examples = _train_sets(videos, photos, batch_size=4, frames_per_clip=2, seed=3)
    assert (records, examples) == (8 + 8, 8 * 2 + 8)
    batches = list(dataset)
    assert len(batches) == (8 * 2 + 8) // 4 and all(frames.shape == (4, 16, 16, 3) for frames, _ in batches)
    known = {**_frames_by_source(videos, "video")[0], **_frames_by_source(photos, "photo")[0]}
    seen = [known[_digest(frame)] for frame, _ in _examples(batches)]   # KeyError: a frame of neither folder
    assert all(label == known_label for (_, known_label), (_, label) in zip(seen, _examples(batches), strict=True))
    assert sum(source == "photo" for source, _ in seen) == 8       # every image once
    assert sum(source == "video" for source, _ in seen) == 8 * 2   # K=2 frames of every clip
    # Mixed within batches, not one folder per batch: some batch holds both.
    per_batch = [{known[_digest(frame)][0] for frame in frames.numpy()} for frames, _ in batches]
    assert any(len(sources) == 2 for sources in per_batch)


def test_real_only_and_pseudo_fakes_come_from_both_folders(videos, photos):
    real, _, examples = _train_sets(videos, photos, batch_size=4, frames_per_clip=2, seed=0, classes="real")
    assert examples == 4 * 2 + 4
    known = {**_frames_by_source(videos, "video")[0], **_frames_by_source(photos, "photo")[0]}
    seen = [known[_digest(frame)] for frame, _ in _examples(real)]
    assert {source for source, _ in seen} == {"video", "photo"} and all(label == 0 for _, label in seen)

    # fraction 1: every real clip and photo becomes a self-blended fake. The blend leaves the border
    # alone (no keypoints: the centred fallback), so a frame's top row still names its folder.
    blended, _, _ = _train_sets(videos, photos, batch_size=4, frames_per_clip=2, seed=0,
                                classes="real", pseudo_fakes=pseudo_fakes.PseudoFakes("sbi", 1.0))
    top_rows = {**_frames_by_source(videos, "video")[1], **_frames_by_source(photos, "photo")[1]}
    out = _examples(blended)
    assert len(out) == 12 and all(label == 1 for _, label in out)
    assert not any(_digest(frame) in known for frame, _ in out)      # every one of them blended
    sources = [top_rows[_digest(frame[0])] for frame, _ in out]
    assert sources.count("photo") == 4 and sources.count("video") == 8


def test_frame_size_and_clip_length_must_match(videos, tmp_path):
    small = write_fake_dataset(tmp_path / "small", kind="image", size=8, counts={"train": (2, 2)})
    with pytest.raises(ValueError, match=f"{small}.*8x8.*{videos}.*16x16"):
        _train_sets(videos, small, batch_size=4, frames_per_clip=2)
    config = train_flags.TrainConfig(data=str(videos), extra_train_data=str(small), run_dir=str(tmp_path / "run"),
                                     model="image_cnn", hparams=dict(IMAGE_TINY), verbose=0)
    with pytest.raises(ValueError, match="--image_size=16 for images"):
        train(config)
    assert not (tmp_path / "run").exists()     # refused before anything was written
    longer = write_fake_dataset(tmp_path / "longer", num_frames=4, size=16, counts={"train": (2, 2)})
    with pytest.raises(ValueError, match="--frames=3"):
        _train_sets(videos, longer, batch_size=4, frames_per_clip=None)


def test_class_weights_count_the_extra_folders_as_trained_on(videos, photos, tmp_path):
    main = DatasetMetadata.load(videos)
    reals = DatasetMetadata.load(write_fake_dataset(tmp_path / "reals", kind="image", size=16,
                                                    counts={"train": (8, 0)}))
    # 4 real + 4 fake clips x 2 frames, + 8 real photos: 16 real, 8 fake examples per epoch.
    assert class_weights(main, 1.2, extras=[reals], frames_per_clip=2) == {0: 24 / 32, 1: 24 / 16}
    assert class_weights(main, 1.2, extras=[DatasetMetadata.load(photos)], frames_per_clip=2) is None
    with pytest.raises(ValueError, match=f"train splits of {videos}, {tmp_path / 'reals'} has only one class"):
        class_weights(main, 1.2, train_classes="real", extras=[reals], frames_per_clip=2)


def test_trainer_runs_an_epoch_on_video_frames_and_photos(videos, photos, tmp_path):
    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    common = dict(data=str(videos), model="image_cnn", hparams=dict(IMAGE_TINY), epochs=1, batch_size=4,
                  frames_per_clip=2, learning_rate=0.01, verbose=0, patience=0, precision="float32")
    config = train_flags.TrainConfig(run_dir=str(tmp_path / "run"), extra_train_data=str(photos), **common)
    summary = train(config, extra_callbacks=[CountSteps()])
    assert len(steps) == (8 * 2 + 8) // 4 and summary["num_train"] == 16
    assert np.isfinite(summary["last_epoch"]["loss"]) and "auc" in summary["best_val"]
    run = RunLayout(config.run_dir)
    assert f"--extra_train_data={photos}" in run.flags.read_text()
    recorded = json.loads(run.data_metadata.read_text())
    assert [entry["directory"] for entry in recorded["extra_train_data"]] == [str(photos.resolve())]
    # The same command finds its finished run; without the photos (or with others) it is another run.
    assert train(config)["num_train"] == 16
    with pytest.raises(ValueError, match="another training run.*extra_train_data"):
        train(train_flags.TrainConfig(run_dir=str(tmp_path / "run"), **common))
