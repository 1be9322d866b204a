"""One file to one record: the preprocessing `dfd.predict` reuses for exact parity.

    make_record(path, spec, label, group) -> serialized tf.train.Example

is read_content() (TensorFlow-free, runs in converter workers) followed by
encode_content() (uses dfd.data.schema, runs in the writing process).

The stages of read_content for a video are
    sample_video_frames()   full-resolution RGB frames, upright
    then either
      crop_faces()          spec.face_crop == "mtcnn": square crops of the main
                            face at spec.size, plus boxes and confidences for
                            the record (dfd.preprocess.faces)
    or
      resize_frames()       the whole frame to spec.size x spec.size
and for an image read_image_and_bytes() -> the same two choices on one frame.
`spec` is a PreprocessSpec or anything with its attributes (workers receive a
plain namespace so that unpickling it does not import TensorFlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dfd.preprocess import image_reader, media, video_reader


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
    face_keypoints: np.ndarray | None = None   # (T, 10) (x, y) pairs in [0, 1], None = absent


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file that cannot be used, and why (one line of skipped.csv)."""

    path: str
    reason: str


def _record_frames(frames: list[np.ndarray], spec) -> dict:
    """Full-resolution frames to the record's frames, face_boxes, face_confidence and
    face_keypoints (RecordContent fields; the face ones None without face cropping).

    Raises dfd.preprocess.faces.NoFaceError (a ValueError: the file is skipped with a
    reason starting 'no face') when too many frames have no face.
    """
    if spec.face_crop == "mtcnn":
        # Importing dfd.preprocess.faces does not import TensorFlow; the detector
        # loads it on first use, so face_crop='none' workers stay TF-free.
        from dfd.preprocess import faces

        crops = faces.crop_faces(frames, spec)
        return dict(frames=crops.crops, face_boxes=crops.boxes,
                    face_confidence=[float(value) for value in crops.confidence], face_keypoints=crops.keypoints)
    if spec.face_crop != "none":
        raise ValueError(f"face_crop must be 'none' or 'mtcnn', got {spec.face_crop!r}")
    return dict(frames=video_reader.resize_frames(frames, spec.size))


def read_video_content(path: str, spec, max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS) -> RecordContent:
    sampled = video_reader.sample_video_frames(path, spec.num_frames, spec.sampling, spec.short_clips,
                                               max_frame_pixels)
    return RecordContent(jpeg_frames=None, frame_indices=sampled.frame_indices,
                         source_frame_count=sampled.source_frame_count, padded_frames=sampled.padded_frames,
                         **_record_frames(sampled.frames, spec))


def read_image_content(path: str, spec) -> RecordContent:
    image, data = image_reader.read_image_and_bytes(path)
    if (spec.face_crop == "none" and spec.encoding == "jpeg" and image.shape[:2] == (spec.size, spec.size)
            and image_reader.is_plain_jpeg(data)):
        # Already what we would store: keep the source's bytes (and its artifacts).
        return RecordContent(frames=None, jpeg_frames=[data], frame_indices=[0], source_frame_count=1)
    return RecordContent(jpeg_frames=None, frame_indices=[0], source_frame_count=1,
                         **_record_frames([image], spec))


def read_content(path: str, spec, max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS) -> RecordContent:
    """The frames `path` gives under `spec`; raises ValueError saying why a file is unusable.

    max_frame_pixels (--max_frame_pixels) bounds a video's frames; it is a reading limit, not
    preprocessing, so it is not in the spec stored with datasets and runs. Images have their own
    fixed bound (image_reader.MAX_PIXELS)."""
    reason = media.check_file(path, spec.kind)
    if reason is not None:
        raise ValueError(reason)
    if spec.kind == "video":
        return read_video_content(path, spec, max_frame_pixels)
    return read_image_content(path, spec)


def try_read_content(path: str, spec, max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS
                     ) -> RecordContent | SkippedFile:
    """read_content, with any failure of this one file turned into a SkippedFile."""
    try:
        return read_content(path, spec, max_frame_pixels)
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
                  face_confidence=content.face_confidence, face_keypoints=content.face_keypoints)
    if content.jpeg_frames is not None:
        return schema.encode_example(jpeg_frames=content.jpeg_frames, **common)
    if spec.encoding == "raw":
        return schema.encode_example(frames=content.frames, **common)
    return schema.encode_example(
        jpeg_frames=[schema.encode_jpeg(frame, spec.jpeg_quality) for frame in content.frames], **common)


def make_record(path: str, spec, label: int, group: str, source: str | None = None,
                max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS) -> bytes:
    """The serialized record of one file, exactly as the converter writes it.

    Raises ValueError when the file cannot be used.
    """
    content = read_content(path, spec, max_frame_pixels)
    return encode_content(content, spec, label, source if source is not None else path, group)
