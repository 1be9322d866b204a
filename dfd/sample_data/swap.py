"""A simulated face swap: the artefacts a real swapping pipeline leaves behind.

A face-swap video keeps the target's head, hair, ears and background and
pastes a generated inner face of another identity over it. What gives it away,
and what this module reproduces, is:
  * the blend mask: a soft oval over eyes, nose and mouth whose seam is visible;
  * colour mismatch: the pasted skin is only partly corrected towards the target's;
  * resolution loss: the pasted face was generated small and upscaled, so it is
    blurrier than the frame and lacks the camera's sensor noise;
  * temporal jitter: the mask is fitted per frame, so its boundary wobbles.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from dfd.sample_data.faces import FaceGrid, Identity


@dataclasses.dataclass(frozen=True)
class SwapStyle:
    """Per-clip settings of the swapping pipeline that produced one fake."""

    correction: float          # fraction of the skin-colour difference the pipeline corrects
    colour_cast: tuple[float, float, float]
    downscale: float           # the generated face's resolution is frame / downscale
    feather: float             # blend edge width in pixels at a 128-pixel face scale
    radius_u: float            # mask radii as fractions of the target's face oval
    radius_v: float
    center_v: float
    jitter: float              # per-frame relative wobble of the mask
    noise_kept: float          # fraction of the camera noise left inside the swapped face


def random_swap_style(rng: np.random.Generator) -> SwapStyle:
    # Every pipeline leaves some cast: a random colour direction of a bounded size.
    cast = rng.normal(0.0, 1.0, 3)
    cast *= rng.uniform(0.03, 0.08) / (np.linalg.norm(cast) + 1e-9)
    return SwapStyle(
        correction=float(rng.uniform(0.0, 0.4)),
        colour_cast=tuple(float(c) for c in cast),
        downscale=float(rng.uniform(3.0, 5.0)),
        feather=float(rng.uniform(1.5, 4.0)),
        radius_u=float(rng.uniform(0.74, 0.86)),
        # From the brows to below the mouth; the forehead and its fringe stay the target's.
        radius_v=float(rng.uniform(0.60, 0.68)),
        center_v=float(rng.uniform(0.12, 0.20)),
        jitter=float(rng.uniform(0.02, 0.05)),
        noise_kept=float(rng.uniform(0.0, 0.15)),
    )


def swap_mask(grid: FaceGrid, target: Identity, style: SwapStyle,
              rng: np.random.Generator) -> np.ndarray:
    """The blend mask of one frame in [0, 1], jittered independently per frame."""
    jitter = style.jitter
    center_u = rng.normal(0.0, jitter) * target.face_width
    center_v = (style.center_v + rng.normal(0.0, jitter)) * target.face_height
    radius_u = style.radius_u * target.face_width * (1.0 + rng.normal(0.0, jitter))
    radius_v = style.radius_v * target.face_height * (1.0 + rng.normal(0.0, jitter))
    du = (grid.u - center_u) / radius_u
    dv = (grid.v - center_v) / radius_v
    # A fitted mask is not a perfect oval: a low-frequency wobble of its radius per frame.
    angle = np.arctan2(dv, du)
    wobble = 1.0
    for harmonic in (2, 3, 5):
        wobble = wobble + rng.normal(0.0, jitter) * np.cos(harmonic * angle + rng.uniform(0, 2 * np.pi))
    distance = np.sqrt(du * du + dv * dv) / wobble
    feather_pixels = style.feather * grid.pose.scale / 40.0  # 40 pixels per face unit ~ a 128 px frame
    edge_pixels = (distance - 1.0) * min(radius_u, radius_v) / grid.pixel
    return np.clip(0.5 - edge_pixels / max(feather_pixels, 0.5), 0.0, 1.0).astype(np.float32)


def swap_face(target_frame: np.ndarray, source_frame: np.ndarray, mask: np.ndarray,
              style: SwapStyle, camera_noise: np.ndarray) -> np.ndarray:
    """Blends the source identity's inner face into the target frame.

    `target_frame` already carries the camera's noise; `source_frame` is the clean
    render of the source identity at the same pose; `camera_noise` is that frame's
    noise, of which only `style.noise_kept` survives inside the generated face.
    """
    weight = mask[..., None]
    total = float(mask.sum()) + 1e-6
    target_mean = (target_frame * weight).sum(axis=(0, 1)) / total
    source_mean = (source_frame * weight).sum(axis=(0, 1)) / total
    generated = (source_frame + style.correction * (target_mean - source_mean)
                 + np.asarray(style.colour_cast, dtype=np.float32))
    height, width = target_frame.shape[:2]
    small = (max(2, round(width / style.downscale)), max(2, round(height / style.downscale)))
    generated = cv2.resize(generated, small, interpolation=cv2.INTER_AREA)
    generated = cv2.resize(generated, (width, height), interpolation=cv2.INTER_LINEAR)
    generated = generated + style.noise_kept * camera_noise
    return target_frame * (1.0 - weight) + generated * weight
