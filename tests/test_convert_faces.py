"""make_tfrecords with --face_crop=mtcnn on full-frame videos and photos of a real face."""

import csv
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from dfd.convert import convert as convert_lib
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.preprocess import records
from dfd.testing.face_frames import (
    face_frame,
    moving_face_clip,
    noise_background,
    write_mp4v,
    write_rotated_portrait_video,
)

NUM_SOURCE_FRAMES = 10
FACE_OPTIONS = dict(face_crop="mtcnn", num_frames=4, frame_size=48, image_size=48, shard_mb=1.0, progress=False,
                    val_fraction=0.0, test_fraction=0.0, max_skip_fraction=1.0)


def contains(box: np.ndarray, face: np.ndarray, at_least: float = 0.9) -> bool:
    """Whether `at_least` of the face box's area lies inside `box` (same units)."""
    inter = np.clip(np.minimum(box[2:], face[2:]) - np.maximum(box[:2], face[:2]), 0, None).prod()
    return inter / np.prod(face[2:] - face[:2]) >= at_least


def records_by_source(output: Path, shape) -> dict:
    out = {}
    for shard in sorted(output.glob("*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(shard)):
            parsed = schema.parse_example_numpy(record.numpy(), shape)
            out[parsed["source"]] = parsed
    return out


def test_full_frame_videos_become_face_crop_records(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "source"
    for folder in ("train/real", "train/fake"):
        (source / folder).mkdir(parents=True)
    landscape, landscape_faces = moving_face_clip(rng, NUM_SOURCE_FRAMES, 640, 360, start=(160, 170),
                                                  end=(470, 190), side_start=80, side_end=110)
    write_mp4v(str(source / "train/real/landscape.mp4"), landscape)
    portrait, portrait_faces = moving_face_clip(rng, NUM_SOURCE_FRAMES, 360, 640, start=(170, 250),
                                                end=(190, 330), side_start=110, side_end=110)
    write_rotated_portrait_video(str(source / "train/fake/portrait.mp4"), portrait)
    write_mp4v(str(source / "train/fake/noface.mp4"),
               [noise_background(rng, 320, 240) for _ in range(NUM_SOURCE_FRAMES)])

    output = tmp_path / "out"
    # Two worker processes: the path a real conversion takes (TensorFlow and
    # MTCNN load inside the workers).
    summary = convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(source), workers=2,
                                                            **FACE_OPTIONS))
    assert summary.counts == {"train": 2} and summary.skipped == 1
    with open(output / "skipped.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == ["train/fake/noface.mp4"]
    assert rows[0]["reason"].startswith("no face: none found in 4 of 4 frames")

    meta = DatasetMetadata.load(output)
    spec = meta.preprocessing
    assert (spec.face_crop, spec.face_margin, spec.face_detect_size, spec.max_no_face_fraction) == \
        ("mtcnn", 1.3, 320, 0.5)
    written = records_by_source(output, spec.record_shape)
    for name, faces_at, (width, height) in (("train/real/landscape.mp4", landscape_faces, (640, 360)),
                                            ("train/fake/portrait.mp4", portrait_faces, (360, 640))):
        record = written[name]
        assert record["frames"].shape == (4, 48, 48, 3)
        assert (record["face_confidence"] > 0.9).all(), record["face_confidence"]
        scale = np.array([width, height, width, height])
        for box, index in zip(record["face_boxes"], record["frame_indices"], strict=True):
            # The portrait clip's boxes are in upright coordinates: the reader rotated it.
            assert contains(box * scale, faces_at[index]), (name, index, box * scale, faces_at[index])
        # The record holds exactly what read_content gives: the function predict reuses.
        again = records.read_content(str(source / name), spec)
        np.testing.assert_array_equal(record["frames"], again.frames)
        np.testing.assert_allclose(record["face_boxes"], again.face_boxes)
        # The keypoints travel from the worker processes into the record.
        assert record["face_keypoints"].shape == (4, 10) and (record["face_keypoints"] >= 0).all()
        np.testing.assert_allclose(record["face_keypoints"], again.face_keypoints)


def test_photos_are_cropped_and_a_photo_without_a_face_is_skipped(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "source"
    for folder in ("train/real", "train/fake"):
        (source / folder).mkdir(parents=True)
    photo, face = face_frame(noise_background(rng, 800, 600), centre=(560, 260), face_side=120)
    cv2.imwrite(str(source / "train/real/photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(source / "train/fake/wall.png"), noise_background(rng, 800, 600))
    output = tmp_path / "out"
    summary = convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(source), workers=1,
                                                            **FACE_OPTIONS))
    assert summary.counts == {"train": 1} and summary.skipped == 1
    assert "train/fake/wall.png,no face: none found in 1 of 1 frames" in (output / "skipped.csv").read_text()
    spec = DatasetMetadata.load(output).preprocessing
    record = records_by_source(output, spec.record_shape)["train/real/photo.png"]
    assert record["frames"].shape == (1, 48, 48, 3) and record["face_confidence"][0] > 0.9
    assert contains(record["face_boxes"][0] * [800, 600, 800, 600], face)
    eyes_y, mouth_y = record["face_keypoints"][0, [1, 3]], record["face_keypoints"][0, [7, 9]]
    assert 0 < eyes_y.max() < mouth_y.min() < 1
