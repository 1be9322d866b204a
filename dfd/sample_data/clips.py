"""Clips and still images: a head moving in front of a textured background, filmed.

A clip is drawn frame by frame from per-clip settings (background, head path,
blinks, lighting drift, defocus and sensor noise) so that real and fake clips
differ only in the swap: everything else is drawn from the same distributions.
Fakes render the target identity, render the source identity at the same pose,
and blend the two through `swap.swap_face`.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from dfd.sample_data import swap
from dfd.sample_data.faces import Identity, Pose, draw_head


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour field with some texture, different per clip: a wall, a room."""
    # Muted colours: half grey, half a random hue, at a random brightness.
    base = (rng.uniform(0.2, 0.8) * 0.5 + rng.uniform(0.15, 0.85, 3) * 0.5).astype(np.float32)
    coarse = rng.normal(0.0, 0.08, (4, 4, 3)).astype(np.float32)
    fine = rng.normal(0.0, 0.03, (16, 16, 3)).astype(np.float32)
    field = (cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
             + cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    # Stripes at a random angle and period (a door frame, a shelf, blinds).
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.1, 0.5) * width
    stripes = 0.06 * np.sign(np.sin(2 * np.pi * (np.cos(angle) * cols + np.sin(angle) * rows) / period))
    return np.clip(base + field + stripes[..., None] * rng.uniform(0, 1), 0, 1).astype(np.float32)


def blink_openness(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eye openness per frame: open, with blinks (half closed, shut, half closed) at random."""
    openness = np.ones(num_frames, dtype=np.float32)
    frame = int(rng.integers(0, 12))
    while frame < num_frames:
        for offset, value in enumerate((0.45, 0.0, 0.45)):
            if frame + offset < num_frames:
                openness[frame + offset] = value
        frame += int(rng.integers(10, 30))
    return openness


def head_track(rng: np.random.Generator, num_frames: int, height: int, width: int) -> list[Pose]:
    """Smooth head motion (sway, nod, roll, turn), blinking, talking and drifting light."""
    t = np.arange(num_frames, dtype=np.float32) / max(num_frames - 1, 1)
    size = min(height, width)

    def wave(amplitude):  # one slow sinusoid with a random period and phase per clip
        return amplitude * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))

    center_x = width / 2 + rng.uniform(-0.06, 0.06) * width + wave(0.04 * width)
    center_y = height * 0.45 + rng.uniform(-0.04, 0.04) * height + wave(0.03 * height)
    # A close-up, as in face-swap datasets: the face fills much of the frame, so the
    # swap's traces survive the converter's downscaling to 64x64.
    scale = size * rng.uniform(0.31, 0.37) * (1.0 + wave(0.04))
    roll = rng.uniform(-0.1, 0.1) + wave(0.08)
    yaw = rng.uniform(-0.3, 0.3) + wave(0.3)
    eyes = blink_openness(rng, num_frames)
    mouth = np.clip(wave(1.0) * rng.uniform(0, 1), 0, 1)
    light_angle = rng.uniform(0, 2 * np.pi) + np.linspace(0, rng.uniform(-0.8, 0.8), num_frames)
    light_strength = rng.uniform(0.1, 0.4)
    return [Pose(center_x=float(center_x[i]), center_y=float(center_y[i]), scale=float(scale[i]),
                 roll=float(roll[i]), yaw=float(np.clip(yaw[i], -1, 1)), eye_openness=float(eyes[i]),
                 mouth_open=float(mouth[i]), light_angle=float(light_angle[i]),
                 light_strength=float(light_strength))
            for i in range(num_frames)]


@dataclasses.dataclass(frozen=True)
class Camera:
    """Per-clip capture settings: exposure drift, white balance, defocus and sensor noise."""

    brightness_start: float
    brightness_end: float
    white_balance: tuple[float, float, float]
    defocus_sigma: float
    noise_sigma: float


def random_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        brightness_start=float(rng.uniform(0.8, 1.15)),
        brightness_end=float(rng.uniform(0.8, 1.15)),
        white_balance=tuple(float(c) for c in rng.uniform(0.92, 1.08, 3)),
        defocus_sigma=float(rng.uniform(0.0, 0.8)),
        noise_sigma=float(rng.uniform(0.02, 0.045)),
    )


def render_clip(rng: np.random.Generator, target: Identity, num_frames: int, height: int,
                width: int, source: Identity | None = None) -> np.ndarray:
    """Renders a clip as uint8 RGB (num_frames, height, width, 3).

    With `source`, the clip is a fake: `source`'s inner face swapped onto `target`.
    """
    backdrop = background(rng, height, width)
    poses = head_track(rng, num_frames, height, width)
    camera = random_camera(rng)
    # The swap draws from its own stream, taken whether or not this clip is a fake,
    # so a real and a fake made from the same seed share background, motion and noise.
    swap_rng = np.random.default_rng(rng.integers(0, 2**63))
    style = swap.random_swap_style(swap_rng) if source is not None else None
    if source is not None:
        # A swap warps the generated face onto the target's landmarks: the source
        # brings its features and colouring, never its outline.
        source = dataclasses.replace(source, face_width=target.face_width,
                                     face_height=target.face_height, jaw=target.jaw)
    white_balance = np.asarray(camera.white_balance, dtype=np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index, pose in enumerate(poses):
        progress = index / max(num_frames - 1, 1)
        exposure = ((1 - progress) * camera.brightness_start + progress * camera.brightness_end)
        film = exposure * white_balance  # the same light falls on whichever face is drawn

        frame = backdrop.copy()
        grid = draw_head(frame, target, pose)
        frame *= film
        if camera.defocus_sigma > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), camera.defocus_sigma)
        noise = rng.normal(0.0, camera.noise_sigma, frame.shape).astype(np.float32)
        frame += noise
        if style is not None:
            source_frame = backdrop.copy()
            draw_head(source_frame, source, pose, face_only=True)
            source_frame *= film
            mask = swap.swap_mask(grid, target, style, swap_rng)
            frame = swap.swap_face(frame, source_frame, mask, style, noise)
        frames[index] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames


def render_image(rng: np.random.Generator, target: Identity, size: int,
                 source: Identity | None = None) -> np.ndarray:
    """One still (size, size, 3) uint8 RGB: a one-frame clip."""
    return render_clip(rng, target, 1, size, size, source)[0]
