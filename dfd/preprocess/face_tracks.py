"""From per-frame face detections to one crop square per frame (pure numpy).

dfd.preprocess.faces runs the detector; this module decides what to crop, so the
choices can be tested without a detector:

  1. pick_track():        the main face of the clip, one box (or none) per frame
  2. fill_missing():      frames where that face was not found get a box
                          interpolated from their neighbours
  3. smooth_boxes():      less frame-to-frame jitter of centre and size
  4. crop_squares():      a square of `margin` x the larger box side around each
                          box, kept inside the frame
  5. keypoints_in_crops(): the track's five facial keypoints per frame, in the
                          coordinates of each frame's crop, normalised to [0, 1]

Boxes here are float pixel boxes (x0, y0, x1, y1) in the full-resolution frame.
A detection row is [x0, y0, x1, y1, confidence], optionally followed by the
detector's five keypoints as (x, y) pairs (dfd.preprocess.faces.KEYPOINT_NAMES order).
"""

from __future__ import annotations

import numpy as np

# A detection continues the track when its centre is within this many
# track-box sides of the last matched box. Uniformly sampled clips are far
# apart in time (16 frames over a 10 s clip are 0.6 s apart), so a head that
# turns or walks moves by a good part of its size between samples; a second
# person is usually further away than this.
MAX_CENTRE_JUMP = 1.5
# ... and when its size is within this factor of the last matched box: zooms
# and walking towards the camera change the size slowly; a background face
# that happens to be near is typically much smaller.
MAX_SIZE_RATIO = 2.0
# How many of the strongest detections are tried as seeds of the track. The
# main face is the one whose whole track is strongest, not the single largest
# box: one big false positive in one frame must not win over a face seen in
# every frame.
NUM_SEEDS = 8


def box_score(detections: np.ndarray) -> np.ndarray:
    """area x confidence of (N, 5) [x0, y0, x1, y1, confidence] rows.

    Area because the main subject of a clip is the largest face; confidence so
    a large, doubtful box does not beat a clear face.
    """
    width = detections[:, 2] - detections[:, 0]
    height = detections[:, 3] - detections[:, 1]
    return np.clip(width, 0, None) * np.clip(height, 0, None) * detections[:, 4]


def _track_weight(detection: np.ndarray) -> float:
    """What one frame adds to a track's strength: box side x confidence.

    Summed over frames, so a face seen in every frame beats a larger one seen
    once; by side, not area, so size counts no more than presence (a face twice
    as wide weighs as much as being found in twice as many frames).
    """
    side = max(detection[2] - detection[0], detection[3] - detection[1], 0.0)
    return float(side * detection[4])


def _continues(last_box: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Distance-like cost of each candidate continuing `last_box`; inf = does not."""
    last_side = max(last_box[2] - last_box[0], last_box[3] - last_box[1], 1e-6)
    last_centre = (last_box[:2] + last_box[2:4]) / 2
    centres = (candidates[:, :2] + candidates[:, 2:4]) / 2
    sides = np.maximum(candidates[:, 2] - candidates[:, 0], candidates[:, 3] - candidates[:, 1])
    jump = np.linalg.norm(centres - last_centre, axis=1) / last_side
    ratio = np.maximum(sides, 1e-6) / last_side
    ok = (jump <= MAX_CENTRE_JUMP) & (ratio <= MAX_SIZE_RATIO) & (ratio >= 1 / MAX_SIZE_RATIO)
    # Closest centre wins, with a size change counted like a jump: the same face
    # keeps both its place and its size.
    cost = jump + np.abs(np.log(np.maximum(ratio, 1e-6)))
    return np.where(ok, cost, np.inf)


def _follow(detections: list[np.ndarray], seed_frame: int, seed_row: int) -> list[int | None]:
    """Row of the track in every frame (None = not found), grown both ways from the seed."""
    chosen: list[int | None] = [None] * len(detections)
    chosen[seed_frame] = seed_row
    for direction in (1, -1):
        last_box = detections[seed_frame][seed_row]
        frame = seed_frame + direction
        while 0 <= frame < len(detections):
            rows = detections[frame]
            if len(rows):
                cost = _continues(last_box, rows)
                best = int(np.argmin(cost))
                if np.isfinite(cost[best]):
                    chosen[frame] = best
                    # Compare with the last *matched* box, so a frame with a
                    # missed face does not break the track.
                    last_box = rows[best]
            frame += direction
    return chosen


def pick_track(detections: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and confidences of the main face track of a clip (see track_rows).

    detections: one (N_t, 5 or more) array [x0, y0, x1, y1, confidence, ...] per frame.
    Returns boxes (T, 4) float64 with NaN rows where the track has no detection,
    and confidence (T,) float32, 0 where not found. All NaN when no detections.
    """
    rows = track_rows(detections)
    boxes, confidence, _ = track_values(detections, rows)
    return boxes, confidence


def track_values(detections: list[np.ndarray], rows: list[int | None]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes (T, 4), confidence (T,), keypoints (T, 10) or None) of the chosen rows.

    NaN boxes and keypoints, confidence 0, where a frame has no row. Keypoints
    are None when the detections carry none (rows of 5 columns).
    """
    num_frames = len(detections)
    boxes = np.full((num_frames, 4), np.nan)
    confidence = np.zeros(num_frames, np.float32)
    with_keypoints = any(len(rows_t) and rows_t.shape[1] >= 15 for rows_t in detections)
    keypoints = np.full((num_frames, 10), np.nan) if with_keypoints else None
    for frame, row in enumerate(rows):
        if row is not None:
            boxes[frame] = detections[frame][row, :4]
            confidence[frame] = detections[frame][row, 4]
            if keypoints is not None:
                keypoints[frame] = detections[frame][row, 5:15]
    return boxes, confidence, keypoints


def track_rows(detections: list[np.ndarray]) -> list[int | None]:
    """The main face track of a clip: its detection row in each frame (None = not found).

    The strongest detections (area x confidence) each seed a track, grown
    frame by frame through the detection that best continues it; the track
    with the largest summed side x confidence wins, i.e. the face that is
    large, confident and present in the most frames.

    detections: one (N_t, 5 or more) array [x0, y0, x1, y1, confidence, ...] per frame.
    All None when there are no detections.
    """
    candidates = [(score, frame, row)
                  for frame, rows in enumerate(detections) if len(rows)
                  for row, score in enumerate(box_score(rows))]
    if not candidates:
        return [None] * len(detections)
    candidates.sort(key=lambda item: -item[0])
    best_track, best_total = None, -1.0
    for _, frame, row in candidates[:NUM_SEEDS]:
        track = _follow(detections, frame, row)
        total = sum(_track_weight(detections[t][r]) for t, r in enumerate(track) if r is not None)
        if total > best_total:
            best_track, best_total = track, total
    return best_track


def fill_missing(boxes: np.ndarray) -> np.ndarray:
    """NaN rows take the box linearly interpolated between the nearest found frames.

    Any number of columns: keypoint rows (T, 10) are filled the same way.

    Interpolating (rather than, say, cropping the whole frame) keeps the crop on
    the face through a blink-length miss (motion blur, a hand in front of the
    face); before the first and after the last found frame the nearest box is
    held, since there is nothing to interpolate towards. Needs >= 1 found row.
    """
    found = ~np.isnan(boxes[:, 0])
    if not found.any():
        raise ValueError("fill_missing needs at least one frame with a box")
    frames = np.arange(len(boxes))
    filled = np.empty_like(boxes)
    for column in range(boxes.shape[1]):
        # np.interp holds the end values outside the known range: "nearest at the ends".
        filled[:, column] = np.interp(frames, frames[found], boxes[found, column])
    return filled


def _median3(values: np.ndarray) -> np.ndarray:
    if len(values) < 3:
        return values.copy()
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean that keeps linear motion unchanged, ends included.

    The ends are padded by point reflection (x[-k] = 2 x[0] - x[k]): a face
    moving steadily keeps its path, where repeating the edge value or
    shrinking the window would pull the first and last crops towards their
    neighbours (by half a step, a lot when 16 samples span a whole clip).
    """
    half = window // 2
    if len(values) < 2 or half == 0:
        return values.copy()
    half = min(half, len(values) - 1)
    before = 2 * values[0] - values[half:0:-1]
    after = 2 * values[-1] - values[-2:-half - 2:-1]
    padded = np.concatenate([before, values, after])
    return np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")


def smooth_boxes(boxes: np.ndarray, centre_window: int = 3, size_window: int = 5) -> np.ndarray:
    """Smooth centre and size over time: a median of 3, then a centred mean.

    The median removes a single wrong box (a detector that jumps to a chin or
    a hairline for one frame) without blurring real motion; the mean removes
    the few-pixel jitter every detector has, which otherwise shows up as a
    shaking crop the model could learn from. The size gets the longer window
    because a face's size changes slowly while its position can move quickly.
    """
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    size = boxes[:, 2:4] - boxes[:, :2]
    centre = np.stack([_moving_average(_median3(centre[:, i]), centre_window) for i in range(2)], axis=1)
    size = np.stack([_moving_average(_median3(size[:, i]), size_window) for i in range(2)], axis=1)
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def crop_squares(boxes: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    """Integer squares (x0, y0, x1, y1) around each box, inside a width x height frame.

    Side = margin x the larger box side, so the whole face (with some hair,
    chin and background, where blending artefacts of face swaps live) is in
    view and the crop is not stretched when resized to size x size.
    A square that crosses the border is shifted back inside instead of cut:
    cutting would make it a rectangle, and the resize would squash the face.
    Only a square larger than the frame's short side is shrunk to that side.
    """
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    side = margin * np.max(boxes[:, 2:4] - boxes[:, :2], axis=1)
    side = np.clip(np.round(side), 1, min(width, height)).astype(np.int64)
    x0 = np.clip(np.round(centre[:, 0] - side / 2).astype(np.int64), 0, width - side)
    y0 = np.clip(np.round(centre[:, 1] - side / 2).astype(np.int64), 0, height - side)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def keypoints_in_crops(keypoints: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Keypoints (T, 10) in frame pixels to the coordinates of each frame's crop square, in [0, 1].

    The crop is resized to a square record frame, so (x - x0) / side is where the point lies
    in the stored frame. Clipped to [0, 1]: a point outside the crop (a face at the frame's
    border, where the square was shifted back inside) is kept at the crop's edge.
    Needs no NaN (fill_missing first).
    """
    squares = np.asarray(squares, np.float64)
    side = (squares[:, 2] - squares[:, 0])[:, None]
    origin = np.tile(squares[:, :2], 5)    # x0, y0, x0, y0, ... to match (x, y) pairs
    return np.clip((keypoints - origin) / side, 0.0, 1.0).astype(np.float32)
