"""Procedural faces: an identity (who) drawn at a pose (where, how lit, eyes open or not).

Everything is drawn with whole-image numpy operations on float32 RGB in [0, 1]:
each part of the face is a soft-edged ellipse in *face coordinates* (u to the
right, v downwards, in units of the head's scale, origin at the face centre),
so one coordinate grid per frame serves every part and a roll of the head is
a rotation of that grid. The soft edges (about one pixel wide) keep the
outlines anti-aliased, so frames look drawn rather than stamped.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Skin tones from light to dark (RGB); an identity's tone lies between two neighbours.
_SKIN_TONES = np.array([
    [0.96, 0.83, 0.74],
    [0.90, 0.72, 0.58],
    [0.78, 0.57, 0.42],
    [0.60, 0.41, 0.28],
    [0.40, 0.26, 0.17],
], dtype=np.float32)
_HAIR_COLOURS = np.array([
    [0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.50, 0.33, 0.16],
    [0.80, 0.65, 0.38], [0.55, 0.20, 0.08], [0.60, 0.60, 0.62],
], dtype=np.float32)
_IRIS_COLOURS = np.array([
    [0.30, 0.18, 0.08], [0.15, 0.30, 0.55], [0.25, 0.40, 0.22], [0.45, 0.40, 0.30],
], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Identity:
    """What makes one synthetic person look like themselves, in face units."""

    identity_id: int
    face_width: float      # half-width of the face oval
    face_height: float     # half-height of the face oval
    jaw: float             # how much the oval narrows towards the chin
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_volume: float
    shirt: tuple[float, float, float]
    eye_spacing: float
    eye_height: float      # how far above the centre the eyes sit
    eye_width: float
    eye_aspect: float      # eye height / width when fully open
    iris: tuple[float, float, float]
    brow_thickness: float
    brow_tilt: float
    nose_length: float
    mouth_width: float
    mouth_y: float
    lip_thickness: float
    smile: float


@dataclasses.dataclass(frozen=True)
class Pose:
    """Where the head is in one frame and how that frame is lit."""

    center_x: float        # pixels
    center_y: float        # pixels
    scale: float           # pixels per face unit
    roll: float = 0.0      # radians
    yaw: float = 0.0       # -1..1: shifts the features sideways, as a turned head does
    eye_openness: float = 1.0
    mouth_open: float = 0.0
    light_angle: float = 0.0
    light_strength: float = 0.25


def random_identity(rng: np.random.Generator, identity_id: int) -> Identity:
    """Draws one identity; different draws differ in shape, colouring and features."""
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(np.floor(tone))
    high = min(low + 1, len(_SKIN_TONES) - 1)
    skin = (1 - (tone - low)) * _SKIN_TONES[low] + (tone - low) * _SKIN_TONES[high]
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)

    def colour(palette):
        return tuple(float(c) for c in np.clip(palette[rng.integers(len(palette))]
                                               + rng.normal(0, 0.04, 3), 0, 1))

    return Identity(
        identity_id=identity_id,
        face_width=float(rng.uniform(0.62, 0.80)),
        face_height=float(rng.uniform(0.88, 1.02)),
        jaw=float(rng.uniform(0.05, 0.35)),
        skin=tuple(float(c) for c in skin),
        hair=colour(_HAIR_COLOURS),
        hair_volume=float(rng.uniform(1.0, 1.25)),
        shirt=tuple(float(c) for c in rng.uniform(0.1, 0.9, 3)),
        eye_spacing=float(rng.uniform(0.22, 0.32)),
        eye_height=float(rng.uniform(0.12, 0.24)),
        eye_width=float(rng.uniform(0.10, 0.14)),
        eye_aspect=float(rng.uniform(0.45, 0.65)),
        iris=colour(_IRIS_COLOURS),
        brow_thickness=float(rng.uniform(0.020, 0.045)),
        brow_tilt=float(rng.uniform(-0.25, 0.25)),
        nose_length=float(rng.uniform(0.22, 0.34)),
        mouth_width=float(rng.uniform(0.17, 0.27)),
        mouth_y=float(rng.uniform(0.44, 0.56)),
        lip_thickness=float(rng.uniform(0.035, 0.06)),
        smile=float(rng.uniform(-0.1, 0.5)),
    )


class FaceGrid:
    """Face coordinates (u, v) of every pixel of a frame for one pose."""

    def __init__(self, height: int, width: int, pose: Pose):
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        x = (cols - pose.center_x) / pose.scale
        y = (rows - pose.center_y) / pose.scale
        cos, sin = np.cos(pose.roll), np.sin(pose.roll)
        self.u = (cos * x + sin * y).astype(np.float32)
        self.v = (-sin * x + cos * y).astype(np.float32)
        self.pixel = 1.0 / pose.scale  # one pixel in face units: the width of a soft edge
        self.pose = pose

    def ellipse(self, center_u: float, center_v: float, radius_u, radius_v,
                softness: float = 1.0, v_offset=0.0, reach: float | None = None) -> np.ndarray:
        """Alpha in [0, 1] of an ellipse whose edge fades over `softness` pixels.

        `radius_u` may be an array (the face oval narrows towards the chin) and
        `v_offset` bends the ellipse (a smile); both are full-frame arrays. Only
        the window around the ellipse (within `reach` face units of its centre,
        by default its larger radius plus a margin for a bend) is computed: most
        parts cover a few percent of the frame.
        """
        if reach is None:
            reach = float(max(np.max(radius_u), np.max(radius_v))) * 1.3
        window = self._window(center_u, center_v, reach, softness)
        u, v = self.u[window], self.v[window]
        radius_u = radius_u[window] if isinstance(radius_u, np.ndarray) else radius_u
        v_offset = v_offset[window] if isinstance(v_offset, np.ndarray) else v_offset
        du = (u - center_u) / radius_u
        dv = (v - center_v - v_offset) / radius_v
        distance = np.sqrt(du * du + dv * dv)
        # Distance past the edge, converted to pixels along the shorter radius.
        edge_pixels = (distance - 1.0) * np.minimum(radius_u, radius_v) / self.pixel
        alpha = np.zeros(self.u.shape, dtype=np.float32)
        alpha[window] = np.clip(0.5 - edge_pixels / max(softness, 1e-3), 0.0, 1.0)
        return alpha

    def _window(self, center_u: float, center_v: float, reach: float, softness: float):
        """Row and column slices of the frame within `reach` face units of a face point."""
        pose = self.pose
        cos, sin = np.cos(pose.roll), np.sin(pose.roll)
        x = pose.center_x + pose.scale * (cos * center_u - sin * center_v)
        y = pose.center_y + pose.scale * (sin * center_u + cos * center_v)
        extent = reach * pose.scale + softness + 2.0
        height, width = self.u.shape
        rows = slice(int(np.clip(np.floor(y - extent), 0, height)), int(np.clip(np.ceil(y + extent) + 1, 0, height)))
        cols = slice(int(np.clip(np.floor(x - extent), 0, width)), int(np.clip(np.ceil(x + extent) + 1, 0, width)))
        return rows, cols


def paint(image: np.ndarray, alpha: np.ndarray, colour) -> None:
    """Alpha-blends a flat or per-pixel colour into `image` in place, only where alpha > 0."""
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return
    window = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 3:
        colour = colour[window]
    part = image[window]
    weight = alpha[window][..., None]
    part *= 1.0 - weight
    part += weight * colour


def face_oval(grid: FaceGrid, identity: Identity, softness: float = 1.0) -> np.ndarray:
    # The oval narrows below the centre, more so for a pointed jaw.
    narrowing = 1.0 - identity.jaw * np.clip(grid.v / identity.face_height, 0, 1) ** 2
    return grid.ellipse(0.0, 0.0, identity.face_width * narrowing, identity.face_height, softness)


def draw_head(image: np.ndarray, identity: Identity, pose: Pose, face_only: bool = False) -> FaceGrid:
    """Draws shoulders, neck, hair and face of `identity` at `pose` into `image` (in place).

    `face_only` skips body, hair and ears: a face swap only ever uses the inner face.
    """
    height, width = image.shape[:2]
    grid = FaceGrid(height, width, pose)
    ident = identity
    skin = np.asarray(ident.skin, dtype=np.float32)
    fw, fh = ident.face_width, ident.face_height

    if not face_only:
        paint(image, grid.ellipse(0.0, fh * 2.2, fw * 2.3, fh * 1.0), np.asarray(ident.shirt) * 0.9)
        paint(image, grid.ellipse(0.0, fh * 0.95, fw * 0.48, fh * 0.6), skin * 0.8)
        hair_back = grid.ellipse(0.0, -fh * 0.2, fw * 1.12 * ident.hair_volume, fh * 1.0)
        paint(image, hair_back, ident.hair)
        # Ears sit just outside the oval at eye level.
        for side in (-1.0, 1.0):
            paint(image, grid.ellipse(side * fw * 0.98, -0.02, 0.09, 0.16), skin * 0.9)

    # Skin lit from one side and darker towards the rim, so the face reads as round.
    oval = face_oval(grid, ident)
    rim = np.sqrt((grid.u / fw) ** 2 + (grid.v / fh) ** 2)
    light = (np.cos(pose.light_angle) * grid.u / fw + np.sin(pose.light_angle) * grid.v / fh)
    shade = (1.0 + pose.light_strength * light) * (1.0 - 0.22 * np.clip(rim, 0, 1) ** 4)
    paint(image, oval, skin * shade[..., None])

    # Fringe: the top of the hair drawn over the forehead, only inside the hair's outline.
    if not face_only:
        fringe = grid.ellipse(0.0, -fh * 0.92, fw * 1.05, fh * 0.42) * hair_back
        paint(image, fringe, ident.hair)

    shift = 0.12 * pose.yaw  # a turned head moves its features towards one side
    eye_v = -ident.eye_height
    for side in (-1.0, 1.0):
        eye_u = side * ident.eye_spacing + shift
        brow_u = eye_u
        tilt = side * ident.brow_tilt * (grid.u - brow_u)
        paint(image, grid.ellipse(brow_u, eye_v - ident.eye_width * 0.95, ident.eye_width * 1.25,
                                  ident.brow_thickness, v_offset=tilt), np.asarray(ident.hair) * 0.8)
        open_height = ident.eye_width * ident.eye_aspect * max(pose.eye_openness, 0.0)
        if open_height > grid.pixel * 0.5:
            white = grid.ellipse(eye_u, eye_v, ident.eye_width, open_height)
            paint(image, white, (0.95, 0.94, 0.92))
            iris_radius = ident.eye_width * 0.48
            iris = grid.ellipse(eye_u + shift * 0.3, eye_v, iris_radius, iris_radius) * white
            paint(image, iris, ident.iris)
            paint(image, grid.ellipse(eye_u + shift * 0.3, eye_v, iris_radius * 0.45,
                                      iris_radius * 0.45) * white, (0.03, 0.03, 0.03))
        # Upper lid and lashes: a dark line that becomes the whole eye when it closes.
        lid_height = max(open_height, grid.pixel * 0.8)
        lid = grid.ellipse(eye_u, eye_v - lid_height * 0.9, ident.eye_width * 1.05,
                           grid.pixel * 1.2 + 0.01)
        paint(image, lid, skin * 0.35)

    nose_v = eye_v + ident.nose_length
    paint(image, grid.ellipse(shift * 1.2, nose_v - ident.nose_length * 0.35, 0.05,
                              ident.nose_length * 0.45), skin * 0.88)
    for side in (-1.0, 1.0):
        paint(image, grid.ellipse(side * 0.045 + shift * 1.2, nose_v, 0.025, 0.016), skin * 0.45)

    mouth_u = shift
    curve = -ident.smile * ((grid.u - mouth_u) / ident.mouth_width) ** 2 * ident.lip_thickness
    lip_colour = skin * np.array([0.85, 0.5, 0.5], dtype=np.float32)
    opening = ident.lip_thickness * 0.8 * pose.mouth_open
    paint(image, grid.ellipse(mouth_u, ident.mouth_y, ident.mouth_width,
                              ident.lip_thickness + opening, v_offset=curve), lip_colour)
    paint(image, grid.ellipse(mouth_u, ident.mouth_y, ident.mouth_width * 0.92,
                              grid.pixel * 0.9 + opening * 0.8, v_offset=curve), (0.18, 0.06, 0.06))
    return grid
