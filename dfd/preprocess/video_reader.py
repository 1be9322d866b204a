"""Video frames: pick which frames to keep, read them in one in-order pass.

Reading is split in two so a face-crop stage can sit between them:
  1. sample_video_frames(): full-resolution RGB frames chosen by the sampling plan
  2. resize_frames():       those frames to size x size
Both are plain functions of numpy arrays, free of TensorFlow, so worker
processes and `dfd.predict` run exactly the same code.

Why one in-order pass: seeking with CAP_PROP_POS_FRAMES re-decodes from the
previous keyframe on every seek (measured 5.7 s against 1.2 s per 480p-1080p
clip). `grab()` advances the decoder; only the kept frames pay for `retrieve()`
(colour conversion and copy).

Why count frames ourselves: the container's frame count is an estimate (from
duration x rate, or absent, or wrong for variable-rate and truncated files).
We plan from it, count the frames actually decoded on the way, and re-plan
with a second pass only when the two disagree in a way that changes the plan.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from dfd.preprocess import media

# Frames with more pixels than this are refused from the stream's header (ConvertConfig, dfd.predict and
# dfd.serve: --max_frame_pixels). 4096 x 2304 holds UHD (3840 x 2160) and DCI 4K (4096 x 2160), upright or
# portrait (an area, not sides). Every kept frame is held at full resolution until it is resized: at 4K
# the 16 of a default clip are 450 MB per reader, at 8000 x 8000 they were 3 GB (4.5 GB peak converting
# one 185 KB file).
MAX_FRAME_PIXELS = 4096 * 2304


class VideoReadError(ValueError):
    """A video that cannot give the frames asked for; the message says why."""


@dataclasses.dataclass
class SampledFrames:
    frames: list[np.ndarray]        # RGB uint8 (H, W, 3), full resolution, len == num_frames
    frame_indices: list[int]        # source frame index of each kept frame (repeats when padded)
    source_frame_count: int         # frames actually decoded from the file
    padded_frames: int              # how many trailing frames repeat the last real one


def plan_indices(frame_count: int, num_frames: int, sampling: str) -> list[int]:
    """Frame indices to keep from a clip of `frame_count` decoded frames.

    uniform:    the centre of each of num_frames equal segments, so the samples
                cover the clip and avoid its first and last frames (often a
                black or corrupt frame in scraped video).
    contiguous: num_frames consecutive frames from the middle of the clip
                (motion between neighbouring frames is kept intact).
    A clip shorter than num_frames gives every frame once, then repeats of the
    last (the caller decides whether to pad or skip).
    """
    if frame_count < 1:
        return []
    if frame_count <= num_frames:
        return list(range(frame_count)) + [frame_count - 1] * (num_frames - frame_count)
    if sampling == "uniform":
        return [int((i + 0.5) * frame_count / num_frames) for i in range(num_frames)]
    if sampling == "contiguous":
        start = (frame_count - num_frames) // 2
        return list(range(start, start + num_frames))
    raise ValueError(f"sampling must be 'uniform' or 'contiguous', got {sampling!r}")


def _open(path: str) -> cv2.VideoCapture:
    """A capture on `path`, which OpenCV must be able to take as UTF-8 (see media.opencv_path)."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise VideoReadError("OpenCV cannot open the video (truncated, e.g. no moov atom, or unsupported codec)")
    # Upright frames for phone videos stored landscape with rotation metadata.
    # OpenCV 5's FFmpeg backend already defaults to this; set it so the behaviour
    # does not depend on the build.
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return capture


def _open_within(path: str, max_frame_pixels: int) -> cv2.VideoCapture:
    """_open, refused when the stream's header gives frames over max_frame_pixels: before any frame is
    grabbed. Opening has decoded a frame or so already (FFmpeg's stream probe): measured +160 MB at
    8000 x 8000 against +1.75 GB reading 8 of its frames, +23 MB against +160 MB at 2000 x 2000."""
    capture = _open(path)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    try:
        if width <= 0 or height <= 0:
            raise VideoReadError("the video's header gives no frame size (damaged or unsupported stream)")
        check_frame_size(width, height, max_frame_pixels)
    except VideoReadError:
        capture.release()
        raise
    return capture


def check_frame_size(width: int, height: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise VideoReadError(f"frames are {width}x{height} ({width * height:,} pixels), more than the "
                             f"--max_frame_pixels={max_frame_pixels} limit; raise the flag to read it")


def _read_pass(capture: cv2.VideoCapture, wanted: set[int], stop_after: int | None,
               max_frame_pixels: int) -> tuple[dict[int, np.ndarray], int]:
    """One in-order pass over a fresh capture (released here).

    Returns {index: RGB frame} for `wanted` and the number of frames decoded;
    decodes to the end of the file unless `stop_after` (a trusted count) is given.
    """
    kept: dict[int, np.ndarray] = {}
    index = 0
    try:
        while stop_after is None or index < stop_after:
            if not capture.grab():
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break  # a frame that demuxes but will not decode ends the usable clip
                # A stream may change size mid-way (a new H.264 SPS): the header's size bounds nothing then.
                check_frame_size(frame.shape[1], frame.shape[0], max_frame_pixels)
                kept[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    return kept, index


def sample_video_frames(path: str, num_frames: int, sampling: str = "uniform", short_clips: str = "pad",
                        max_frame_pixels: int = MAX_FRAME_PIXELS) -> SampledFrames:
    """Full-resolution RGB frames of `path` chosen by `plan_indices`.

    Raises VideoReadError (a ValueError) for files that cannot be used: not openable, frames of
    more than max_frame_pixels, no decodable frame, or shorter than num_frames with short_clips='skip'.
    """
    with media.opencv_path(path) as readable:
        capture = _open_within(readable, max_frame_pixels)
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        planned = plan_indices(reported, num_frames, sampling) if reported > 0 else []
        kept, decoded = _read_pass(capture, set(planned), None, max_frame_pixels)
        if decoded == 0:
            raise VideoReadError("no decodable frames (zero-frame or corrupt video)")
        indices = plan_indices(decoded, num_frames, sampling)
        if not set(indices) <= set(kept):
            # The container's count was wrong: a second pass with the true count.
            kept, _ = _read_pass(_open_within(readable, max_frame_pixels), set(indices), decoded, max_frame_pixels)
        if not set(indices) <= set(kept):
            raise VideoReadError(f"frames {sorted(set(indices) - set(kept))[:5]} decode differently on a second pass")
    if decoded < num_frames and short_clips == "skip":
        raise VideoReadError(f"clip has {decoded} frames, fewer than the {num_frames} asked for (--short_clips=skip)")
    padded = max(0, num_frames - decoded)
    return SampledFrames(frames=[kept[i] for i in indices], frame_indices=indices,
                         source_frame_count=decoded, padded_frames=padded)


def resize_frames(frames: list[np.ndarray], size: int) -> np.ndarray:
    """RGB frames of any size to uint8 (T, size, size, 3).

    The whole frame is resized to a square (aspect ratio not kept): nothing is
    cropped away, and with face cropping the input is already square. INTER_AREA
    when shrinking (no aliasing), INTER_LINEAR when enlarging.
    """
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = resize_frame(frame, size)
    return out


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    height, width = frame.shape[:2]
    if (height, width) == (size, size):
        return frame
    shrinking = height * width >= size * size
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
