"""Frames with a real face at a known place, for face-crop tests and the benchmark.

The face is scikit-image's `data.astronaut()` (Eileen Collins, a public-domain
NASA portrait; scikit-image is a test-only dependency). Her head and shoulders
are pasted, scaled, onto a noisy background so a test knows exactly where the
face is in every frame.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

# The face in the 512 x 512 astronaut picture, (x0, y0, x1, y1) pixels, ear to
# ear and hairline to chin: MTCNN's box at full resolution, checked by eye.
ASTRONAUT_FACE = (181.0, 64.0, 265.0, 171.0)
# The pasted region around it (head, hair, neck ring): enough context for a
# detector, small enough to move around a frame.
_HEAD_REGION = (110, 0, 340, 260)


@functools.lru_cache(maxsize=1)
def astronaut_head() -> np.ndarray:
    from skimage import data  # test-only dependency

    x0, y0, x1, y1 = _HEAD_REGION
    return np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1])


def noise_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth-ish coloured noise: texture for the detector to reject, cheap to make."""
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def face_frame(background: np.ndarray, centre: tuple[float, float], face_side: float,
               head: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`background` with the astronaut's face centred at `centre` and `face_side` px wide.

    Returns (frame, face box (x0, y0, x1, y1) in pixels). The head may run over
    the frame border; it is clipped.
    """
    head = astronaut_head() if head is None else head
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    scale = face_side / (fx1 - fx0)
    resized = cv2.resize(head, None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # Face centre inside the resized head region.
    local_cx = ((fx0 + fx1) / 2 - _HEAD_REGION[0]) * scale
    local_cy = ((fy0 + fy1) / 2 - _HEAD_REGION[1]) * scale
    left, top = int(round(centre[0] - local_cx)), int(round(centre[1] - local_cy))
    frame = background.copy()
    height, width = frame.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + resized.shape[1]), min(height, top + resized.shape[0])
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = resized[y0 - top:y1 - top, x0 - left:x1 - left]
    face_box = np.array([
        left + (fx0 - _HEAD_REGION[0]) * scale, top + (fy0 - _HEAD_REGION[1]) * scale,
        left + (fx1 - _HEAD_REGION[0]) * scale, top + (fy1 - _HEAD_REGION[1]) * scale,
    ])
    return frame, face_box


def moving_face_clip(rng: np.random.Generator, num_frames: int, width: int, height: int,
                     start: tuple[float, float], end: tuple[float, float],
                     side_start: float, side_end: float) -> tuple[list[np.ndarray], np.ndarray]:
    """A clip whose face moves linearly from `start` to `end` and scales from
    side_start to side_end, on fresh noise each frame. Returns (frames, face boxes (T, 4))."""
    frames, boxes = [], []
    for t in range(num_frames):
        a = t / max(1, num_frames - 1)
        centre = (start[0] + a * (end[0] - start[0]), start[1] + a * (end[1] - start[1]))
        frame, box = face_frame(noise_background(rng, width, height), centre,
                                side_start + a * (side_end - side_start))
        frames.append(frame)
        boxes.append(box)
    return frames, np.array(boxes)


def write_mp4v(path: str, frames: list[np.ndarray], fps: int = 10) -> None:
    """RGB frames to an mp4 with OpenCV's own MPEG-4 writer."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def write_rotated_portrait_video(path: str, upright_frames: list[np.ndarray], fps: int = 10) -> None:
    """A phone-style video: portrait frames stored sideways (landscape) with
    display-rotation metadata, written by imageio-ffmpeg's bundled ffmpeg."""
    import subprocess

    import imageio_ffmpeg

    height, width = upright_frames[0].shape[:2]
    landscape = path + ".landscape.mp4"
    writer = imageio_ffmpeg.write_frames(landscape, (height, width), fps=fps, codec="libx264",
                                         macro_block_size=8, output_params=["-qp", "10"])
    writer.send(None)
    for frame in upright_frames:
        writer.send(np.ascontiguousarray(cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)))
    writer.close()
    # Stream copy: the pixels stay sideways, only the display matrix is added
    # (90 degrees counter-clockwise undoes the clockwise turn above).
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-display_rotation", "90",
                    "-i", landscape, "-c", "copy", path], check=True)
    os.remove(landscape)
