"""dfd.predict on full-frame videos and photos crops the face exactly as the converter did
(face_crop=mtcnn in the run's preprocessing.json), on a real face photograph composited into
generated media; and MTCNN gives the same boxes when predict's threads share it."""

import concurrent.futures
import io
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from dfd import models
from dfd.convert import convert
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import loading, predict
from dfd.preprocess import faces
from dfd.run_layout import RunLayout
from dfd.testing.face_frames import face_frame, moving_face_clip, noise_background, write_mp4v

NUM_FRAMES = 4
SIZE = 32
TINY_LSTM = dict(conv_filters=(4, 4), kernel_sizes=(3,), frame_dense_units=8, lstm_units=4, head_units=4)
TINY_CNN = dict(conv_filters=(4,), kernel_sizes=(3,), dense_units=8)
FACE_OPTIONS = dict(face_crop="mtcnn", num_frames=NUM_FRAMES, frame_size=SIZE, image_size=SIZE, workers=1,
                    shard_mb=1.0, val_fraction=0.0, test_fraction=0.0, progress=False)


def save_run(run_dir: Path, spec, model: keras.Model) -> RunLayout:
    """A run directory as the trainer leaves it: best checkpoint and preprocessing.json."""
    layout = RunLayout(run_dir)
    layout.best_model.parent.mkdir(parents=True, exist_ok=True)
    model.save(layout.best_model)
    spec.save(layout.preprocessing)
    return layout


def converted(source: Path, output: Path, **options) -> tuple[dict, object]:
    """Converts `source` with face cropping; returns ({source name: parsed record}, spec)."""
    convert.convert(convert.ConvertConfig(output=str(output), source=str(source), **FACE_OPTIONS, **options))
    meta = DatasetMetadata.load(output)
    spec = meta.preprocessing
    written = {}
    for serialized in tf.data.TFRecordDataset([str(p) for p in meta.shard_paths("train")]):
        record = schema.parse_example_numpy(serialized.numpy(), spec.record_shape)
        written[record[schema.SOURCE]] = record
    return written, spec


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Full-frame videos and photos: a face per class for the converter, and faceless ones."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    for kind in ("videos", "photos"):
        for label in ("real", "fake"):
            (root / kind / "train" / label).mkdir(parents=True)
    for label, start, end in (("real", (110, 110), (200, 130)), ("fake", (220, 140), (140, 110))):
        frames, _ = moving_face_clip(rng, 8, 320, 240, start=start, end=end, side_start=60, side_end=75)
        write_mp4v(str(root / "videos" / "train" / label / "face.mp4"), frames)
        photo, _ = face_frame(noise_background(rng, 320, 240), start, 70)
        assert cv2.imwrite(str(root / "photos" / "train" / label / "face.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    write_mp4v(str(root / "noface.mp4"), [noise_background(rng, 320, 240) for _ in range(8)])
    assert cv2.imwrite(str(root / "noface.jpg"), noise_background(rng, 320, 240))
    return root


def test_concurrent_detection_on_the_shared_detector_matches_sequential():
    """predict builds records in threads that share one MTCNN: its boxes must not depend on that."""
    rng = np.random.default_rng(1)
    clips = [moving_face_clip(rng, 3, 240, 180, start=(80 + 20 * i, 90), end=(140, 100), side_start=50 + 5 * i,
                              side_end=60)[0] for i in range(3)]
    clips.append([noise_background(rng, 240, 180) for _ in range(3)])
    sequential = [faces.detect_faces(clip, 320) for clip in clips]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        concurrent_runs = list(pool.map(lambda clip: faces.detect_faces(clip, 320), clips * 2))
    assert all(len(boxes) == 1 for boxes in sequential[0])   # the face is found, so boxes are compared
    for expected, got in zip(sequential * 2, concurrent_runs, strict=True):
        for expected_frame, got_frame in zip(expected, got, strict=True):
            np.testing.assert_array_equal(got_frame, expected_frame)


def test_predict_crops_a_full_frame_video_like_the_converter(media, tmp_path):
    written, spec = converted(media / "videos", tmp_path / "shards", encoding="raw")
    assert spec.face_crop == "mtcnn" and sorted(written) == ["train/fake/face.mp4", "train/real/face.mp4"]
    keras.utils.set_random_seed(0)
    layout = save_run(tmp_path / "run", spec, models.build_model("cnn_lstm", (NUM_FRAMES, SIZE, SIZE, 3),
                                                                 **TINY_LSTM))
    loaded = loading.load(layout.root)
    assert loaded.spec == spec
    for name, record in written.items():
        assert (record[schema.FACE_CONFIDENCE] > 0.9).all()   # a real face crop, not the whole frame
        decoded = predict.decode_records([predict.file_record(str(media / "videos" / name), loaded.spec)], spec)
        np.testing.assert_array_equal(decoded[schema.FRAMES][0], record[schema.FRAMES])   # raw: bit-exact
        np.testing.assert_array_equal(decoded[schema.FRAME_INDICES][0], record[schema.FRAME_INDICES])
        np.testing.assert_array_equal(decoded[schema.FACE_BOXES][0].reshape(-1, 4), record[schema.FACE_BOXES])

    paths = [str(media / "videos" / "train" / "real" / "face.mp4"), str(media / "noface.mp4"),
             str(media / "videos" / "train" / "fake" / "face.mp4")]
    results = predict.predict_files(loaded, paths, progress=None)   # threads build the three records at once
    real, noface, fake = results
    assert noface.error.startswith("no face") and noface.fake_probability is None, noface
    for result, name in ((real, "train/real/face.mp4"), (fake, "train/fake/face.mp4")):
        assert result.error is None and result.kind == "video" and result.frames_used == NUM_FRAMES
        expected = loaded.score(written[name][schema.FRAMES][None])[0]
        assert result.fake_probability == pytest.approx(expected, abs=1e-6)
    # The command behind `python -m dfd.predict`, on the folder: the faceless file is an entry, not a stop.
    from dfd.predict import predict_command
    stdout = io.StringIO()
    assert predict_command(str(layout.root), [str(media / "noface.mp4"), str(media / "videos")], stdout=stdout) == 0
    entries = {Path(entry["path"]).relative_to(media).as_posix(): entry for entry in json.loads(stdout.getvalue())}
    assert entries["noface.mp4"]["error"].startswith("no face")
    assert entries["videos/train/real/face.mp4"]["fake_probability"] == real.fake_probability


def test_predict_crops_a_full_frame_photo_like_the_converter(media, tmp_path):
    written, spec = converted(media / "photos", tmp_path / "shards")
    assert spec.kind == "image" and spec.encoding == "jpeg" and spec.face_crop == "mtcnn"
    keras.utils.set_random_seed(0)
    layout = save_run(tmp_path / "run", spec, models.build_model("image_cnn", (SIZE, SIZE, 3), **TINY_CNN))
    loaded = loading.load(layout.root)
    paths = [str(media / "photos" / name) for name in sorted(written)] + [str(media / "noface.jpg")]
    results = predict.predict_files(loaded, paths, progress=None)
    assert results[-1].error.startswith("no face") and results[-1].fake_probability is None
    for result, name in zip(results[:-1], sorted(written), strict=True):
        record = written[name]
        assert (record[schema.FACE_CONFIDENCE] > 0.9).all()
        decoded = predict.decode_records([predict.file_record(result.path, loaded.spec)], spec)
        # JPEG of the same crop at the same quality, decoded by the same code: the same pixels.
        np.testing.assert_array_equal(decoded[schema.FRAMES][0], record[schema.FRAMES])
        assert result.error is None and result.kind == "image"
        assert result.fake_probability == pytest.approx(loaded.score(record[schema.FRAMES])[0], abs=1e-6)
