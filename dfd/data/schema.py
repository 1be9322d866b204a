"""The TFRecord schema: the one definition the writer and every reader import.

One record is one example: a single image (num_frames == 1) or one clip of
`num_frames` frames. Records are `tf.train.Example`s (not SequenceExamples) so a
whole batch of serialized records parses in one `tf.io.parse_example` call.

Frames are stored in one of two encodings:
  raw:  `frames` holds ONE bytes value, the clip as uint8 in (T, H, W, 3) RGB
        order. Decoding is `decode_raw` + reshape: bit-exact and nearly free.
  jpeg: `frames` holds T bytes values, one JPEG per frame (RGB).

Everything a user needs to trace a prediction back to a file travels with the
record: the source path, its group (source video or identity) and label name.
Face boxes are normalised (x0, y0, x1, y1) in the source frame, one per frame;
records converted without face cropping carry the full frame and confidence 0.
Face keypoints are MTCNN's five points per frame (left eye, right eye, nose,
mouth left, mouth right; left/right as seen in the image) as (x, y) pairs in
the stored frame, normalised to [0, 1]: T*10 floats. Records without them
(converted without face cropping, or before keypoints were stored) hold
KEYPOINTS_ABSENT (-1) in every value; parsing fills that in for old records.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1

ENCODINGS = ("raw", "jpeg")
LABEL_NAMES = ("real", "fake")  # index == integer label; 1 means fake

# Feature keys.
FRAMES = "frames"
LABEL = "label"
LABEL_NAME = "label_name"
SOURCE = "source"
GROUP = "group"
NUM_FRAMES = "num_frames"
HEIGHT = "height"
WIDTH = "width"
SOURCE_FRAME_COUNT = "source_frame_count"
FRAME_INDICES = "frame_indices"
PADDED_FRAMES = "padded_frames"
FACE_BOXES = "face_boxes"
FACE_CONFIDENCE = "face_confidence"
FACE_KEYPOINTS = "face_keypoints"

FULL_FRAME_BOX = (0.0, 0.0, 1.0, 1.0)
NUM_KEYPOINTS = 5            # values per frame: 2 * NUM_KEYPOINTS
# Outside the [0, 1] range of real keypoints, so "absent" needs no second feature.
KEYPOINTS_ABSENT = -1.0


@dataclasses.dataclass(frozen=True)
class RecordShape:
    """The fixed shape of every record in a dataset (from metadata.json)."""

    num_frames: int
    height: int
    width: int
    encoding: str

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if min(self.num_frames, self.height, self.width) < 1:
            raise ValueError(f"record shape must be positive, got {self}")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, self.height, self.width, 3)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_jpeg(frame_rgb: np.ndarray, quality: int) -> bytes:
    """One RGB uint8 frame to JPEG bytes, the way every dfd writer encodes it."""
    return tf.io.encode_jpeg(frame_rgb, quality=quality, chroma_downsampling=False).numpy()


def encode_example(
    *,
    frames: np.ndarray | None = None,
    jpeg_frames: Sequence[bytes] | None = None,
    height: int,
    width: int,
    label: int,
    source: str,
    group: str,
    source_frame_count: int,
    frame_indices: Sequence[int],
    padded_frames: int = 0,
    face_boxes: np.ndarray | None = None,
    face_confidence: Sequence[float] | None = None,
    face_keypoints: np.ndarray | None = None,
) -> bytes:
    """Serializes one example.

    Give `frames` (uint8, (T, H, W, 3), RGB) for raw encoding, or `jpeg_frames`
    (T JPEG byte strings, already encoded: the converter keeps a source JPEG's
    own bytes where it can) for jpeg encoding. Exactly one of the two.
    face_keypoints: (T, 10) (x, y) pairs in [0, 1]; None stores KEYPOINTS_ABSENT.
    """
    if (frames is None) == (jpeg_frames is None):
        raise ValueError("give exactly one of frames= (raw) or jpeg_frames= (jpeg)")
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (real) or 1 (fake), got {label!r}")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
            raise ValueError(
                f"raw frames must be uint8 (T, {height}, {width}, 3), got {frames.dtype} {frames.shape}")
        num_frames = frames.shape[0]
        frame_feature = _bytes([np.ascontiguousarray(frames).tobytes()])
    else:
        num_frames = len(jpeg_frames)
        frame_feature = _bytes(jpeg_frames)
    if len(frame_indices) != num_frames:
        raise ValueError(f"{len(frame_indices)} frame indices for {num_frames} frames")
    if face_boxes is None:
        face_boxes = np.tile(np.asarray(FULL_FRAME_BOX, np.float32), (num_frames, 1))
    face_boxes = np.asarray(face_boxes, np.float32).reshape(num_frames, 4)
    if face_confidence is None:
        face_confidence = [0.0] * num_frames
    if face_keypoints is None:
        face_keypoints = np.full((num_frames, 2 * NUM_KEYPOINTS), KEYPOINTS_ABSENT, np.float32)
    face_keypoints = np.asarray(face_keypoints, np.float32).reshape(num_frames, 2 * NUM_KEYPOINTS)
    features = {
        FRAMES: frame_feature,
        LABEL: _ints([label]),
        LABEL_NAME: _bytes([LABEL_NAMES[label].encode()]),
        SOURCE: _bytes([os.fsencode(source)]),   # a file name that is not UTF-8 keeps its own bytes
        GROUP: _bytes([os.fsencode(group)]),
        NUM_FRAMES: _ints([num_frames]),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
        SOURCE_FRAME_COUNT: _ints([source_frame_count]),
        FRAME_INDICES: _ints(frame_indices),
        PADDED_FRAMES: _ints([padded_frames]),
        FACE_BOXES: _floats(face_boxes.reshape(-1)),
        FACE_CONFIDENCE: _floats(face_confidence),
        FACE_KEYPOINTS: _floats(face_keypoints.reshape(-1)),
    }
    # deterministic=True sorts the feature map: the same example gives the same
    # bytes in every process, so a resumed conversion rewrites identical shards.
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def keypoints_feature(num_frames: int) -> tf.io.FixedLenFeature:
    """face_keypoints, read as KEYPOINTS_ABSENT from records written before it existed."""
    size = num_frames * 2 * NUM_KEYPOINTS
    return tf.io.FixedLenFeature([size], tf.float32, default_value=[KEYPOINTS_ABSENT] * size)


def training_features(shape: RecordShape, keypoints: bool = False) -> dict:
    """What the training pipeline parses: frames and label, and face_keypoints if asked
    (pseudo-fakes build their masks from them)."""
    if shape.encoding == "raw":
        frames = tf.io.FixedLenFeature([], tf.string)
    else:
        frames = tf.io.FixedLenFeature([shape.num_frames], tf.string)
    features = {FRAMES: frames, LABEL: tf.io.FixedLenFeature([], tf.int64)}
    if keypoints:
        features[FACE_KEYPOINTS] = keypoints_feature(shape.num_frames)
    return features


def full_features(shape: RecordShape) -> dict:
    """Every feature, for evaluation, inspection and verification."""
    n = shape.num_frames
    features = training_features(shape)
    features.update({
        LABEL_NAME: tf.io.FixedLenFeature([], tf.string),
        SOURCE: tf.io.FixedLenFeature([], tf.string),
        GROUP: tf.io.FixedLenFeature([], tf.string),
        NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        SOURCE_FRAME_COUNT: tf.io.FixedLenFeature([], tf.int64),
        FRAME_INDICES: tf.io.FixedLenFeature([n], tf.int64),
        PADDED_FRAMES: tf.io.FixedLenFeature([], tf.int64),
        FACE_BOXES: tf.io.FixedLenFeature([n * 4], tf.float32),
        FACE_CONFIDENCE: tf.io.FixedLenFeature([n], tf.float32),
        FACE_KEYPOINTS: keypoints_feature(n),
    })
    return features


def parse_batch(serialized: tf.Tensor, shape: RecordShape, full: bool = False, keypoints: bool = False) -> dict:
    """Parses a batch (1-D string tensor) of serialized records at once (keypoints: see training_features)."""
    spec = full_features(shape) if full else training_features(shape, keypoints)
    return tf.io.parse_example(serialized, spec)


def decode_frames(frames: tf.Tensor, shape: RecordShape) -> tf.Tensor:
    """Parsed `frames` of a batch to uint8 (B, T, H, W, 3).

    raw: one decode_raw over the batch and a reshape. jpeg: the B*T JPEGs are
    decoded by one graph-level map (parallel iterations), never a Python loop.
    """
    if shape.encoding == "raw":
        clips = tf.io.decode_raw(frames, tf.uint8)
        return tf.reshape(clips, (-1,) + shape.clip_shape)
    flat = tf.reshape(frames, [-1])
    decoded = tf.map_fn(
        lambda jpeg: tf.ensure_shape(tf.io.decode_jpeg(jpeg, channels=3), shape.frame_shape),
        flat,
        fn_output_signature=tf.TensorSpec(shape.frame_shape, tf.uint8),
        parallel_iterations=64,
    )
    return tf.reshape(decoded, (-1,) + shape.clip_shape)


def decode_text(value: bytes) -> str:
    """A stored source or group back to the str Python uses for that file name (os.fsdecode's rule:
    bytes that are not UTF-8 become surrogate escapes, so the name round-trips to the same file)."""
    return value.decode("utf-8", "surrogateescape")


def parse_example_numpy(serialized: bytes, shape: RecordShape) -> dict:
    """One serialized record to numpy values (tests, inspection, predict)."""
    parsed = parse_batch(tf.constant([serialized]), shape, full=True)
    out = {key: value.numpy()[0] for key, value in parsed.items() if key != FRAMES}
    out[FRAMES] = decode_frames(parsed[FRAMES], shape).numpy()[0]
    for key in (LABEL_NAME, SOURCE, GROUP):
        out[key] = decode_text(out[key])
    out[FACE_BOXES] = out[FACE_BOXES].reshape(-1, 4)
    out[FACE_KEYPOINTS] = out[FACE_KEYPOINTS].reshape(-1, 2 * NUM_KEYPOINTS)
    return out
