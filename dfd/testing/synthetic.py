"""Tiny procedurally moving clips and images for tests and the conversion benchmark.

Not the sample dataset (tools/make_sample_data.py draws faces): these are
cheap moving shapes, enough to exercise decoding, sampling and writing.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def moving_clip(seed: int, num_frames: int, height: int, width: int, noise: float = 0.0) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB: a coloured disc moving over a gradient, different per seed.

    `noise` adds uniform sensor noise of +-noise grey levels, which
    makes the video cost what camera footage costs to decode.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, int(rng.integers(0, 256)))], axis=-1).astype(np.uint8)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    velocity = rng.uniform(-3, 3, 2)
    centre = np.array([width / 2, height / 2])
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    # A few noise fields cycled over the clip: as costly to decode as fresh noise, far cheaper to make.
    fields = [rng.integers(-int(noise), int(noise) + 1, (height, width, 3), dtype=np.int16) for _ in range(7)] \
        if noise else []
    for t in range(num_frames):
        frame = base.copy()
        cx, cy = (centre + velocity * t) % [width, height]
        cv2.circle(frame, (int(cx), int(cy)), max(2, min(height, width) // 5), colour, -1)
        if noise:
            frame = np.clip(frame + fields[t % len(fields)], 0, 255).astype(np.uint8)
        frames[t] = frame
    return frames


def write_mp4(path: str | Path, frames_rgb: np.ndarray, fps: float = 10.0) -> Path:
    """RGB frames to an mp4 (mp4v) through OpenCV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames_rgb.shape[1:3]
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not video.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for frame in frames_rgb:
        video.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    video.release()
    return path


def write_clip_and_photo(folder: str | Path, seed: int, num_frames: int = 12, height: int = 24,
                         width: int = 32) -> Path:
    """folder/clip.mp4 (a moving clip) and folder/face.jpg (its first frame): one file of each kind to score."""
    folder = Path(folder)
    clip = moving_clip(seed, num_frames, height, width)
    write_mp4(folder / "clip.mp4", clip)
    if not cv2.imwrite(str(folder / "face.jpg"), cv2.cvtColor(clip[0], cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"OpenCV cannot write {folder / 'face.jpg'}")
    return folder


def write_video_folder(root: str | Path, counts: dict[str, int], num_frames: int = 20, height: int = 48,
                       width: int = 64, seed: int = 0, noise: float = 0.0) -> Path:
    """root/<split>/{real,fake}/clipNNNN.mp4 with counts[split] clips per class."""
    root = Path(root)
    index = 0
    for split, per_class in counts.items():
        for label in ("real", "fake"):
            for _ in range(per_class):
                write_mp4(root / split / label / f"clip{index:05d}.mp4",
                          moving_clip(seed * 100_003 + index, num_frames, height, width, noise))
                index += 1
    return root
