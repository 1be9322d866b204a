"""The preprocessing spec: how a file becomes the frames a model sees.

It is written into every dataset's metadata.json by the converter, copied into
every run directory by the trainer, and read back by evaluate and predict, so a
model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dfd.atomic_files import write_json
from dfd.data.schema import ENCODINGS, RecordShape

KINDS = ("image", "video")
SAMPLINGS = ("uniform", "contiguous")
SHORT_CLIPS = ("pad", "skip")
FACE_CROPS = ("none", "mtcnn")


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    kind: str                      # "image" or "video"
    num_frames: int                # frames per record; 1 for images
    size: int                      # frames are resized to size x size
    encoding: str = "raw"          # "raw" or "jpeg" (see dfd.data.schema)
    jpeg_quality: int = 95
    sampling: str = "uniform"      # video: evenly spaced, or one contiguous run
    short_clips: str = "pad"       # video shorter than num_frames: pad with last frame, or skip
    face_crop: str = "none"        # "none" or "mtcnn"
    face_margin: float = 1.3       # square crop side = margin * larger box side
    face_detect_size: int = 320    # longest side of the copy faces are detected on
    max_no_face_fraction: float = 0.5

    def __post_init__(self):
        _check_choice("kind", self.kind, KINDS)
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_choice("sampling", self.sampling, SAMPLINGS)
        _check_choice("short_clips", self.short_clips, SHORT_CLIPS)
        _check_choice("face_crop", self.face_crop, FACE_CROPS)
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
                             "restore it from the training data's metadata.json (its \"preprocessing\" entry)") from None


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
