"""The training settings that need no TensorFlow: the augmentation (a TrainConfig's nested `augment`) and the
choices of the training flags. dfd.data.pipeline, dfd.train_flags and the benchmarks import them from here.
"""

from __future__ import annotations

import dataclasses

from dfd.settings import setting

TRAIN_CLASSES = ("all", "real")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# Serialized records held for shuffling (--shuffle_buffer). Raw 16x64x64 clips are ~200 KB, so 1024 of them
# are ~200 MB of host memory: enough mixing across the interleaved shards without hoarding RAM.
SHUFFLE_BUFFER = 1024


def parse_jpeg_quality(value) -> tuple[int, int] | None:
    """--augment_jpeg: "" or "none" → None; "LOW,HIGH" (e.g. "30,95") → (30, 95); a (LOW, HIGH) pair as it is."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    value = (value or "").strip().lower()
    if value in ("", "none", "0"):
        return None
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"--augment_jpeg takes a quality range LOW,HIGH such as 30,95 (or none), "
                         f"got {value!r}") from None
    Augment(jpeg_quality=(low, high))   # checks the range
    return low, high


def format_jpeg_quality(quality: tuple[int, int] | None) -> str:
    return "none" if quality is None else f"{quality[0]},{quality[1]}"


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation, drawn once per clip (every frame of it alike); its flags are --augment_<field>.

    All but JPEG re-compression run on the accelerator, inside the model (dfd.models.augmentation,
    dfd.train_flags.device_augment); none acts at evaluation or prediction. jpeg_quality, (low, high):
    re-compress every frame as JPEG at a quality drawn from [low, high] per clip (None: off).
    Compression artefacts are what a detector sees in the wild, and JPEG encoding has no accelerator
    kernel, so it runs in the input pipeline (dfd.data.pipeline). It costs host CPU (an encode and a
    decode per frame: see README for the measured clips/s), so it runs after frame sampling, on the K
    frames kept.
    """

    flip: bool = setting(True, "Random horizontal flip (same for every frame of a clip).")
    crop: float = setting(0.0, "Random resized crop: box height and width drawn from [1-x, 1] of the frame, random "
                          "position, resized back (zoom + shift), e.g. 0.2; 0 turns it off.")
    color: float = setting(0.0, "Colour jitter: brightness, contrast and saturation change up to x, hue up to x/4 "
                           "of a turn (e.g. 0.2); 0 turns it off.")
    brightness: float = setting(0.0, "Max brightness change as a fraction of 255, per clip (e.g. 0.1); overrides "
                                "the brightness part of --augment_color when set.")
    contrast: float = setting(0.0, "Max contrast change: factor in [1-x, 1+x] per clip (e.g. 0.1); overrides the "
                              "contrast part of --augment_color when set.")
    blur: float = setting(0.0, "Gaussian blur with sigma drawn from [0, x] pixels per clip (e.g. 1.5); 0 turns it "
                          "off.")
    noise: float = setting(0.0, "Gaussian noise with standard deviation drawn from [0, x] x 255 per clip (e.g. "
                           "0.03); 0 turns it off.")
    cutout: float = setting(0.0, "Cutout: on half the clips a mid-grey box of x times the frame's height and width "
                            "at a random place, the same on every frame (e.g. 0.3); 0 turns it off.")
    jpeg_quality: tuple[int, int] | None = setting(
        None, "JPEG re-compression on the host at a quality drawn from LOW,HIGH per clip (e.g. 30,95); none "
        "turns it off. Costs host CPU (see README).", flag="jpeg", parse=parse_jpeg_quality, format=format_jpeg_quality)

    def __post_init__(self):
        if self.jpeg_quality is not None:
            low, high = self.jpeg_quality
            if not 1 <= low <= high <= 100:
                raise ValueError(f"JPEG quality range must satisfy 1 <= LOW <= HIGH <= 100, got {low},{high}")

    @property
    def enabled(self) -> bool:
        """Whether the input pipeline augments (JPEG re-compression); the rest is the model's."""
        return self.jpeg_quality is not None


NO_AUGMENT = Augment(flip=False)   # nothing at all (the input pipeline reads only jpeg_quality)
