"""One file to one record: the preprocessing `dfd.predict` reuses for exact parity.

    make_record(path, spec, label, group) -> serialized tf.train.Example

is read_content() (TensorFlow-free, runs in converter workers) followed by
encode_content() (uses dfd.data.schema, runs in the writing process).

The stages of read_content for a video are
    sample_video_frames()   full-resolution RGB frames, upright
    [face crop]             <- issue 5: dfd.data.faces slots in here, on the
                               full-resolution frames, returning square crops
                               plus boxes and confidences for the record
    resize_frames()         to spec.size x spec.size
and for an image read_image_and_bytes() -> [face crop] -> resize_image().
`spec` is a PreprocessSpec or anything with its attributes (workers receive a
plain namespace so that unpickling it does not import TensorFlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dfd.convert import image_reader, media, video_reader


@dataclasses.dataclass
class RecordContent:
    """The frames of one record before serialization."""

    frames: np.ndarray | None          # uint8 (T, size, size, 3) RGB; None when jpeg_frames is set
    jpeg_frames: list[bytes] | None    # the source's own JPEG bytes, kept unchanged
    frame_indices: list[int]
    source_frame_count: int
    padded_frames: int = 0
    face_boxes: np.ndarray | None = None       # (T, 4) normalised, None = full frame
    face_confidence: list[float] | None = None


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file that cannot be used, and why (one line of skipped.csv)."""

    path: str
    reason: str


def _check_face_crop(spec) -> None:
    if spec.face_crop != "none":
        raise ValueError(f"face_crop={spec.face_crop!r} is not available in this converter yet; use face_crop='none'")


def read_video_content(path: str, spec) -> RecordContent:
    sampled = video_reader.sample_video_frames(path, spec.num_frames, spec.sampling, spec.short_clips)
    _check_face_crop(spec)
    return RecordContent(frames=video_reader.resize_frames(sampled.frames, spec.size), jpeg_frames=None,
                         frame_indices=sampled.frame_indices, source_frame_count=sampled.source_frame_count,
                         padded_frames=sampled.padded_frames)


def read_image_content(path: str, spec) -> RecordContent:
    image, data = image_reader.read_image_and_bytes(path)
    _check_face_crop(spec)
    if (spec.encoding == "jpeg" and image.shape[:2] == (spec.size, spec.size)
            and image_reader.is_plain_jpeg(data)):
        # Already what we would store: keep the source's bytes (and its artifacts).
        return RecordContent(frames=None, jpeg_frames=[data], frame_indices=[0], source_frame_count=1)
    frames = image_reader.resize_image(image, spec.size)[np.newaxis]
    return RecordContent(frames=frames, jpeg_frames=None, frame_indices=[0], source_frame_count=1)


def read_content(path: str, spec) -> RecordContent:
    """The frames `path` gives under `spec`; raises ValueError saying why a file is unusable."""
    reason = media.check_file(path, spec.kind)
    if reason is not None:
        raise ValueError(reason)
    if spec.kind == "video":
        return read_video_content(path, spec)
    return read_image_content(path, spec)


def try_read_content(path: str, spec) -> RecordContent | SkippedFile:
    """read_content, with any failure of this one file turned into a SkippedFile."""
    try:
        return read_content(path, spec)
    except MemoryError:
        return SkippedFile(path, "out of memory while decoding")
    except Exception as error:  # noqa: BLE001 - one broken file must never stop a run
        return SkippedFile(path, str(error).splitlines()[0] if str(error) else type(error).__name__)


def encode_content(content: RecordContent, spec, label: int, source: str, group: str) -> bytes:
    """Serializes RecordContent with dfd.data.schema (imports TensorFlow)."""
    from dfd.data import schema  # lazily: workers never get here

    common = dict(height=spec.size, width=spec.size, label=label, source=source, group=group,
                  source_frame_count=content.source_frame_count, frame_indices=content.frame_indices,
                  padded_frames=content.padded_frames, face_boxes=content.face_boxes,
                  face_confidence=content.face_confidence)
    if content.jpeg_frames is not None:
        return schema.encode_example(jpeg_frames=content.jpeg_frames, **common)
    if spec.encoding == "raw":
        return schema.encode_example(frames=content.frames, **common)
    return schema.encode_example(
        jpeg_frames=[schema.encode_jpeg(frame, spec.jpeg_quality) for frame in content.frames], **common)


def make_record(path: str, spec, label: int, group: str, source: str | None = None) -> bytes:
    """The serialized record of one file, exactly as the converter writes it.

    Raises ValueError when the file cannot be used.
    """
    return encode_content(read_content(path, spec), spec, label, source if source is not None else path, group)
