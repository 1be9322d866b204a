"""The preprocessing spec: how a file becomes the frames a model sees.

It is written into every dataset's metadata.json by the converter, copied into
every run directory by the trainer, and read back by evaluate and predict, so a
model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dfd import settings
from dfd.atomic_files import write_json
from dfd.data.schema import ENCODINGS, RecordShape
from dfd.settings import setting

KINDS = ("image", "video")
SAMPLINGS = ("uniform", "contiguous")
SHORT_CLIPS = ("pad", "skip")
FACE_CROPS = ("none", "mtcnn")


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Its settings' help and choices are make_tfrecords' flags (dfd.convert.config.ConvertConfig takes them)."""

    kind: str = setting(help="Force the dataset kind; default: from file extensions.", choices=KINDS)
    num_frames: int = setting(help="Frames per record; 1 for images.")
    size: int = setting(help="Frames are resized to size x size.")
    encoding: str = setting(
        "raw", "Frame storage. Default (measured, BENCHMARKS.md 'Conversion'): raw for video (16x64x64 "
        "clips read 5.6x faster through tf.data than as JPEGs, for 5.2x the bytes) and jpeg for "
        "images (a source JPEG of the target size is kept byte-for-byte, with the artifacts a "
        "detector learns from).", choices=ENCODINGS)
    jpeg_quality: int = setting(95, "JPEG quality (1-100) when frames are re-encoded.")
    sampling: str = setting("uniform", "Video: uniform = evenly spaced across the clip; contiguous = consecutive "
                            "frames from its middle.", choices=SAMPLINGS)
    short_clips: str = setting("pad", "Video shorter than --frames: pad by repeating its last frame, or skip it.",
                               choices=SHORT_CLIPS)
    face_crop: str = setting(
        "none", "none: keep the whole frame (many public sets are already face crops); mtcnn: detect faces "
        "(MTCNN, CPU), follow the main face through the clip and store square crops of it, with the "
        "boxes and detection confidences in each record.", choices=FACE_CROPS)
    face_margin: float = setting(1.3, "Face crop: square side = face_margin x the larger side of the face box.")
    face_detect_size: int = setting(
        320, "Face crop: detect on a copy with this longest side (320 finds faces down to about 6 percent of it; "
        "640 costs about 4x, BENCHMARKS.md 'Face cropping').")
    max_no_face_fraction: float = setting(
        0.5, "Face crop: skip a file (reason 'no face' in skipped.csv) when more than this fraction of its "
        "frames has no face; the others take interpolated boxes.")

    def __post_init__(self):
        settings.check_choices(self)   # kind, encoding, sampling, short_clips, face_crop
        if self.kind == "image" and self.num_frames != 1:
            raise ValueError(f"an image spec has num_frames=1, got {self.num_frames}")
        if self.num_frames < 1 or self.size < 8:
            raise ValueError(f"num_frames must be >= 1 and size >= 8, got {self.num_frames}, {self.size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.face_margin < 1.0:
            raise ValueError(f"face_margin must be >= 1.0, got {self.face_margin}")
        if not 0.0 <= self.max_no_face_fraction <= 1.0:
            raise ValueError(f"max_no_face_fraction must be in [0, 1], got {self.max_no_face_fraction}")

    @property
    def record_shape(self) -> RecordShape:
        return RecordShape(self.num_frames, self.size, self.size, self.encoding)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PreprocessSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing parameters {unknown}: written by a newer dfd?")
        return cls(**values)

    def differences(self, other: "PreprocessSpec") -> list[str]:
        """Human-readable list of parameters that differ, empty when equal."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} != {theirs[key]!r}" for key in mine if mine[key] != theirs[key]]

    def input_differences(self, other: "PreprocessSpec", frames_of_clips: bool) -> list[str]:
        """The differences that change what a model trained on `self` is fed from `other`'s records.

        frames_of_clips: the model scores single frames (an image model), so image and video records of any
        length feed it alike and only the frame size matters; a video model also needs the clip length.
        How the faces were found (face_crop, margins, sampling, encoding) changes the frames' content, not
        their shape: a cross-dataset evaluation reports those differences and still scores.
        """
        keys = ("size",) if frames_of_clips else ("size", "num_frames")
        return [f"{key}: {getattr(self, key)!r} != {getattr(other, key)!r}"
                for key in keys if getattr(self, key) != getattr(other, key)]

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "PreprocessSpec":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no preprocessing spec at {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:   # JSONDecodeError is a ValueError
            raise ValueError(f"{path} is not a valid preprocessing spec ({type(error).__name__}: {error}); "
                             "restore it from the training data's metadata.json (its \"preprocessing\" entry)"
                             ) from None

