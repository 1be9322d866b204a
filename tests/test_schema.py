import numpy as np
import pytest

from dfd.data import schema
from dfd.data.preprocessing import PreprocessSpec


def _clip(num_frames=4, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)


def test_raw_round_trip_is_bit_exact():
    clip = _clip()
    record = schema.encode_example(
        frames=clip, height=16, width=16, label=1, source="a/b.mp4", group="b",
        source_frame_count=40, frame_indices=[0, 13, 26, 39])
    parsed = schema.parse_example_numpy(record, schema.RecordShape(4, 16, 16, "raw"))
    np.testing.assert_array_equal(parsed[schema.FRAMES], clip)
    assert parsed[schema.LABEL] == 1
    assert parsed[schema.LABEL_NAME] == "fake"
    assert parsed[schema.SOURCE] == "a/b.mp4"
    assert list(parsed[schema.FRAME_INDICES]) == [0, 13, 26, 39]
    np.testing.assert_allclose(parsed[schema.FACE_BOXES], np.tile(schema.FULL_FRAME_BOX, (4, 1)))
    assert (parsed[schema.FACE_KEYPOINTS] == schema.KEYPOINTS_ABSENT).all()   # converted without face crop
    assert parsed[schema.FACE_KEYPOINTS].shape == (4, 10)


def test_keypoints_round_trip_and_records_from_before_keypoints_parse_as_absent():
    import tensorflow as tf

    clip = _clip(num_frames=2)
    keypoints = np.random.default_rng(1).uniform(0, 1, (2, 10)).astype(np.float32)
    record = schema.encode_example(frames=clip, height=16, width=16, label=0, source="a.mp4", group="a",
                                   source_frame_count=2, frame_indices=[0, 1], face_keypoints=keypoints)
    shape = schema.RecordShape(2, 16, 16, "raw")
    np.testing.assert_array_equal(schema.parse_example_numpy(record, shape)[schema.FACE_KEYPOINTS], keypoints)
    training = schema.parse_batch(tf.constant([record]), shape, keypoints=True)
    np.testing.assert_array_equal(training[schema.FACE_KEYPOINTS].numpy(), keypoints.reshape(1, 20))
    # A record written before face_keypoints existed: the same example without that feature.
    example = tf.train.Example.FromString(record)
    del example.features.feature[schema.FACE_KEYPOINTS]
    old = schema.parse_example_numpy(example.SerializeToString(), shape)
    assert (old[schema.FACE_KEYPOINTS] == schema.KEYPOINTS_ABSENT).all()
    np.testing.assert_array_equal(old[schema.FRAMES], clip)


def test_jpeg_round_trip_within_tolerance():
    smooth = np.linspace(0, 255, 32 * 32 * 3).reshape(1, 32, 32, 3).astype(np.uint8).repeat(2, axis=0)
    jpegs = [schema.encode_jpeg(frame, quality=95) for frame in smooth]
    record = schema.encode_example(
        jpeg_frames=jpegs, height=32, width=32, label=0, source="x.jpg", group="x",
        source_frame_count=1, frame_indices=[0, 0])
    parsed = schema.parse_example_numpy(record, schema.RecordShape(2, 32, 32, "jpeg"))
    error = np.abs(parsed[schema.FRAMES].astype(int) - smooth.astype(int))
    assert error.mean() < 3


def test_encode_rejects_wrong_shape_and_label():
    with pytest.raises(ValueError, match="uint8"):
        schema.encode_example(frames=_clip(size=8), height=16, width=16, label=0, source="s",
                              group="g", source_frame_count=4, frame_indices=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="label"):
        schema.encode_example(frames=_clip(), height=16, width=16, label=2, source="s",
                              group="g", source_frame_count=4, frame_indices=[0, 1, 2, 3])


def test_spec_differences_and_validation():
    a = PreprocessSpec(kind="video", num_frames=16, size=64)
    b = PreprocessSpec(kind="video", num_frames=8, size=64, encoding="jpeg")
    assert a.differences(a) == []
    assert a.differences(b) == ["num_frames: 16 != 8", "encoding: 'raw' != 'jpeg'"]
    assert PreprocessSpec.from_dict(a.to_dict()) == a
    # What a model is fed: an image model takes frames of any record of its size (another dataset's face crops
    # and clip lengths included); a video model also needs its clip length.
    faces = PreprocessSpec(kind="image", num_frames=1, size=64, encoding="jpeg", face_crop="none")
    crops = PreprocessSpec(kind="video", num_frames=32, size=64, face_crop="mtcnn")
    assert faces.input_differences(crops, frames_of_clips=True) == []
    assert a.input_differences(b, frames_of_clips=False) == ["num_frames: 16 != 8"]
    assert faces.input_differences(PreprocessSpec(kind="image", num_frames=1, size=128), True) == ["size: 64 != 128"]
    with pytest.raises(ValueError, match="sampling"):
        PreprocessSpec(kind="video", num_frames=16, size=64, sampling="random")
