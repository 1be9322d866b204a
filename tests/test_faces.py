"""Face cropping on a real face photograph (scikit-image's astronaut) composited
into generated frames and videos, plus the track logic on hand-made boxes."""

import cv2
import numpy as np
import pytest

from dfd.data.preprocessing import PreprocessSpec
from dfd.preprocess import face_tracks, faces
from dfd.testing.face_frames import (
    face_frame,
    moving_face_clip,
    noise_background,
    write_mp4v,
    write_rotated_portrait_video,
)
from dfd.testing.video_files import read_all_frames

SPEC = PreprocessSpec(kind="video", num_frames=8, size=64, face_crop="mtcnn")


def containment(face_boxes: np.ndarray, crop_boxes: np.ndarray) -> np.ndarray:
    """Fraction of each face box's area inside its crop box (both pixels)."""
    low = np.maximum(face_boxes[:, :2], crop_boxes[:, :2])
    high = np.minimum(face_boxes[:, 2:], crop_boxes[:, 2:])
    inter_w, inter_h = np.clip(high - low, 0, None).T
    area = (face_boxes[:, 2] - face_boxes[:, 0]) * (face_boxes[:, 3] - face_boxes[:, 1])
    return inter_w * inter_h / area


def to_pixels(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return boxes * np.array([width, height, width, height])


# ---------------------------------------------------------------- track logic


def test_track_prefers_consistent_face_over_one_big_false_positive():
    face = np.array([100, 100, 150, 160, 0.99])
    big_false = np.array([0, 0, 200, 200, 0.9])  # 4x wider, once
    small_other = np.array([400, 50, 420, 75, 0.95])
    detections = [np.array([face + [3 * t, 0, 3 * t, 0, 0], small_other]) for t in range(6)]
    detections[2] = np.array([big_false, small_other])  # face missed, a huge box instead
    boxes, confidence = face_tracks.pick_track(detections)
    assert np.isnan(boxes[2]).all() and confidence[2] == 0
    for t in (0, 1, 3, 4, 5):
        np.testing.assert_allclose(boxes[t], face[:4] + [3 * t, 0, 3 * t, 0])
    filled = face_tracks.fill_missing(boxes)
    np.testing.assert_allclose(filled[2], face[:4] + [6, 0, 6, 0])  # midway between frames 1 and 3


def test_fill_missing_holds_nearest_box_at_the_ends():
    boxes = np.full((5, 4), np.nan)
    boxes[2] = [10, 10, 20, 20]
    boxes[3] = [12, 10, 22, 20]
    filled = face_tracks.fill_missing(boxes)
    np.testing.assert_allclose(filled[:2], [[10, 10, 20, 20]] * 2)
    np.testing.assert_allclose(filled[4], [12, 10, 22, 20])


def test_smoothing_reduces_jitter_and_keeps_motion():
    rng = np.random.default_rng(0)
    t = np.arange(16)
    true = np.stack([100 + 5 * t, 100 + 0 * t, 180 + 5 * t, 190 + 0 * t], axis=1).astype(float)
    noisy = true + rng.normal(0, 4, true.shape)
    smoothed = face_tracks.smooth_boxes(noisy)
    assert np.abs(smoothed - true)[2:-2].mean() < 0.6 * np.abs(noisy - true)[2:-2].mean()
    # Steady motion and zoom pass unchanged, first and last frame included.
    zoom = true + np.stack([-t, -t, t, t], axis=1)
    np.testing.assert_allclose(face_tracks.smooth_boxes(zoom), zoom, atol=1e-9)
    np.testing.assert_allclose(face_tracks.smooth_boxes(zoom[:2]), zoom[:2], atol=1e-9)
    # A one-frame jump to a wrong box is removed by the median.
    spiky = true.copy()
    spiky[7] += 60
    assert np.abs(face_tracks.smooth_boxes(spiky)[7] - true[7]).max() < 15


def test_crop_square_is_shifted_inside_the_frame_not_squashed():
    boxes = np.array([[0.0, 10, 40, 50], [580, 300, 640, 360], [0, 0, 1000, 1000]])
    squares = face_tracks.crop_squares(boxes, 1.3, width=640, height=360)
    sides = squares[:, 2] - squares[:, 0]
    np.testing.assert_array_equal(sides, squares[:, 3] - squares[:, 1])
    np.testing.assert_array_equal(sides, [52, 78, 360])  # 1.3 x larger side, capped by the frame
    assert (squares[:, 0] >= 0).all() and (squares[:, 2] <= 640).all()
    assert (squares[:, 1] >= 0).all() and (squares[:, 3] <= 360).all()


# ---------------------------------------------------------- real face, MTCNN


def test_crops_follow_a_moving_scaling_face():
    rng = np.random.default_rng(1)
    frames, truth = moving_face_clip(rng, 8, 640, 360, start=(150, 150), end=(480, 200),
                                     side_start=60, side_end=110)
    result = faces.crop_faces(frames, SPEC)
    assert result.crops.shape == (8, 64, 64, 3) and result.crops.dtype == np.uint8
    assert result.boxes.shape == (8, 4) and result.boxes.dtype == np.float32
    assert (result.confidence > 0.9).all()
    crop_boxes = to_pixels(result.boxes, 640, 360)
    assert (containment(truth, crop_boxes) > 0.9).all(), containment(truth, crop_boxes)
    face_sides = np.max(truth[:, 2:] - truth[:, :2], axis=1)
    centres = (crop_boxes[:, :2] + crop_boxes[:, 2:]) / 2, (truth[:, :2] + truth[:, 2:]) / 2
    centre_error = np.linalg.norm(centres[0] - centres[1], axis=1)
    assert (centre_error < 0.1 * face_sides).all(), centre_error / face_sides
    # Square in pixels, about margin x face side (not the whole frame).
    sides = crop_boxes[:, 2] - crop_boxes[:, 0]
    np.testing.assert_allclose(sides, crop_boxes[:, 3] - crop_boxes[:, 1], atol=1)
    assert ((sides / face_sides > 1.0) & (sides / face_sides < 1.9)).all(), sides / face_sides


def test_hidden_frames_get_interpolated_boxes():
    rng = np.random.default_rng(2)
    frames, truth = moving_face_clip(rng, 8, 480, 320, start=(120, 140), end=(360, 160),
                                     side_start=70, side_end=70)
    for t in (3, 4):
        frames[t] = noise_background(rng, 480, 320)  # face out of view
    result = faces.crop_faces(frames, SPEC)
    assert result.confidence[3] == 0 and result.confidence[4] == 0
    assert (np.delete(result.confidence, [3, 4]) > 0.9).all()
    # Linear motion, so the interpolated box is where the face would have been.
    assert (containment(truth, to_pixels(result.boxes, 480, 320)) > 0.9).all()
    # The keypoints of the hidden frames are interpolated too: between their neighbours'.
    points = result.keypoints.reshape(8, 5, 2)
    low, high = np.minimum(points[2], points[5]), np.maximum(points[2], points[5])
    assert ((points[3:5] >= low - 0.03) & (points[3:5] <= high + 0.03)).all(), points[2:6]


def test_keypoints_of_the_astronaut_lie_in_her_face():
    rng = np.random.default_rng(7)
    frames, truth = moving_face_clip(rng, 4, 640, 360, start=(200, 170), end=(420, 190),
                                     side_start=80, side_end=100)
    result = faces.crop_faces(frames, SPEC)
    assert result.keypoints.shape == (4, 10) and result.keypoints.dtype == np.float32
    points = result.keypoints.reshape(4, 5, 2)
    # The true face box in each crop's [0, 1] coordinates.
    crops = to_pixels(result.boxes, 640, 360)
    side = (crops[:, 2] - crops[:, 0])[:, None]
    face = (truth - np.tile(crops[:, :2], 2)) / side
    inside = ((points >= face[:, None, :2]) & (points <= face[:, None, 2:])).all(axis=2)
    assert inside.all(), (points, face)
    left_eye, right_eye, nose, mouth_left, mouth_right = (points[:, k] for k in range(5))
    # faces.KEYPOINT_NAMES order, left and right as seen in the image; y grows downwards.
    assert (left_eye[:, 0] < nose[:, 0]).all() and (nose[:, 0] < right_eye[:, 0]).all()
    assert (mouth_left[:, 0] < mouth_right[:, 0]).all()
    assert (np.maximum(left_eye[:, 1], right_eye[:, 1]) < nose[:, 1]).all()
    assert (nose[:, 1] < np.minimum(mouth_left[:, 1], mouth_right[:, 1])).all()
    # Eyes about a third of the face apart, as on any face.
    eye_distance = np.linalg.norm(right_eye - left_eye, axis=1) / (face[:, 2] - face[:, 0])
    assert ((eye_distance > 0.3) & (eye_distance < 0.7)).all(), eye_distance


def test_clip_without_a_face_raises_no_face():
    rng = np.random.default_rng(3)
    frames = [noise_background(rng, 320, 240) for _ in range(4)]
    with pytest.raises(faces.NoFaceError, match="^no face: none found in 4 of 4 frames"):
        faces.crop_faces(frames, SPEC)
    # max_no_face_fraction=1.0 asks never to skip: the centred square stands in.
    never_skip = PreprocessSpec(kind="video", num_frames=4, size=32, face_crop="mtcnn", max_no_face_fraction=1.0)
    result = faces.crop_faces(frames, never_skip)
    np.testing.assert_allclose(result.boxes, [[40 / 320, 0, 280 / 320, 1]] * 4, atol=1e-6)
    assert (result.confidence == 0).all() and result.keypoints is None   # stored as absent


def test_too_many_missed_frames_raise_no_face():
    rng = np.random.default_rng(4)
    frames, _ = moving_face_clip(rng, 6, 320, 240, start=(160, 120), end=(160, 120), side_start=60, side_end=60)
    for t in (0, 2, 3, 5):
        frames[t] = noise_background(rng, 320, 240)
    with pytest.raises(faces.NoFaceError, match="^no face: none found in 4 of 6"):
        faces.crop_faces(frames, SPEC)  # 4/6 > 0.5
    lenient = PreprocessSpec(kind="video", num_frames=6, size=64, face_crop="mtcnn", max_no_face_fraction=0.7)
    assert faces.crop_faces(frames, lenient).confidence[1] > 0.9


def test_still_face_gives_a_steady_box():
    rng = np.random.default_rng(5)
    frames, truth = moving_face_clip(rng, 8, 480, 360, start=(240, 170), end=(240, 170),
                                     side_start=80, side_end=80)
    result = faces.crop_faces(frames, SPEC)
    crop_boxes = to_pixels(result.boxes, 480, 360)
    # A still face on changing noise: detector jitter must not shake the crop
    # by more than a couple of pixels (2.5 % of its ~110 px side).
    assert crop_boxes.std(axis=0).max() < 2.5, crop_boxes
    assert (containment(truth, crop_boxes) > 0.95).all()


def test_image_is_one_frame_and_face_at_the_border_stays_square():
    rng = np.random.default_rng(6)
    frame, truth = face_frame(noise_background(rng, 1280, 720), centre=(60, 360), face_side=100)
    spec = PreprocessSpec(kind="image", num_frames=1, size=96, face_crop="mtcnn")
    result = faces.crop_faces([frame], spec)
    assert result.crops.shape == (1, 96, 96, 3)
    box = to_pixels(result.boxes, 1280, 720)
    assert box[0, 0] == 0  # shifted inside instead of cut
    np.testing.assert_allclose(box[0, 2] - box[0, 0], box[0, 3] - box[0, 1], atol=1)
    assert containment(truth[None], box)[0] > 0.9
    # The crop shows the face: it equals the source square resized.
    x0, y0, x1, y1 = np.round(box[0]).astype(int)
    expected = cv2.resize(frame[y0:y1, x0:x1], (96, 96), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(result.crops[0], expected)


def test_frames_from_an_mp4_written_and_read_by_opencv(tmp_path):
    rng = np.random.default_rng(7)
    frames, truth = moving_face_clip(rng, 8, 640, 360, start=(200, 180), end=(440, 180),
                                     side_start=90, side_end=90)
    path = str(tmp_path / "clip.mp4")
    write_mp4v(path, frames)
    decoded = read_all_frames(path)
    assert len(decoded) == 8
    result = faces.crop_faces(decoded, SPEC)
    assert (containment(truth, to_pixels(result.boxes, 640, 360)) > 0.9).all()


def test_bad_frames_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="at least one frame"):
        faces.crop_faces([], SPEC)
    with pytest.raises(ValueError, match="RGB uint8"):
        faces.crop_faces([np.zeros((10, 10), np.uint8)], SPEC)
    with pytest.raises(ValueError, match="share one size"):
        faces.crop_faces([np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)], SPEC)


def _read_all(path: str, auto_orientation: bool) -> list[np.ndarray]:
    capture = cv2.VideoCapture(path)
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1 if auto_orientation else 0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_portrait_video_with_rotation_metadata(tmp_path):
    rng = np.random.default_rng(8)
    upright, truth = moving_face_clip(rng, 4, 360, 640, start=(180, 260), end=(180, 300),
                                      side_start=110, side_end=110)
    path = str(tmp_path / "portrait.mp4")
    write_rotated_portrait_video(path, upright)
    frames = _read_all(path, auto_orientation=True)
    assert frames[0].shape == (640, 360, 3)  # upright portrait, as the video reader delivers it
    result = faces.crop_faces(frames, SPEC)
    assert (containment(truth, to_pixels(result.boxes, 360, 640)) > 0.9).all()
    # Why the reader must rotate: MTCNN does not find a face lying on its side.
    with pytest.raises(faces.NoFaceError):
        faces.crop_faces(_read_all(path, auto_orientation=False), SPEC)
