"""Face cropping: full-resolution frames in, square face crops out.

    crops = crop_faces(frames, spec)    # spec.face_crop == "mtcnn"
    crops.crops       uint8 (T, spec.size, spec.size, 3)
    crops.boxes       float32 (T, 4) normalised (x0, y0, x1, y1): the square of
                      the source frame each crop shows (stored as face_boxes)
    crops.confidence  float32 (T,): detector confidence; 0 where the box was
                      interpolated from neighbouring frames
    crops.keypoints   float32 (T, 10): the face's five keypoints (KEYPOINT_NAMES)
                      as (x, y) pairs in the crop, normalised to [0, 1]
                      (stored as face_keypoints; what dfd.data.pseudo_fakes
                      builds its blend masks from)

The converter calls crop_faces() through dfd.preprocess.records.read_content(),
which `dfd.predict` reuses, so a model sees at prediction time exactly the
crops it was trained on. The steps
(detect on a small copy, choose the main face track, fill misses, smooth,
square crop) are explained where they happen; the track logic is in
dfd.preprocess.face_tracks.

The detector is MTCNN from the `mtcnn` package (MIT; its weights ship inside
the wheel, so nothing is downloaded; it runs on TensorFlow). It is built once
per process on first use, because building its three networks costs more than
detecting faces in a clip.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Sequence

import cv2
import numpy as np

from dfd.preprocess import face_tracks
from dfd.preprocess.video_reader import resize_frame

# Frames handed to the detector in one call. Batches amortise TensorFlow's
# per-call overhead; the cap bounds memory for long lists at large detect sizes
# (MTCNN builds an image pyramid per frame).
DETECT_BATCH = 32
# MTCNN's five keypoints, in the order dfd stores them. "left" and "right" are
# the image's left and right (MTCNN's "left_eye" is the one nearer x = 0, the
# subject's right eye), checked on the astronaut photo by tests/test_convert_faces.py.
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class NoFaceError(ValueError):
    """Too few frames with a face; the converter records reason 'no face'."""


@dataclasses.dataclass(frozen=True)
class FaceCrops:
    crops: np.ndarray       # uint8 (T, size, size, 3)
    boxes: np.ndarray       # float32 (T, 4) normalised x0, y0, x1, y1 of each crop in its frame
    confidence: np.ndarray  # float32 (T,), 0 where no face was detected in that frame
    keypoints: np.ndarray | None = None  # float32 (T, 10) (x, y) pairs in the crop, [0, 1]; None = none found


_detector = None
_detector_lock = threading.Lock()
_worker_threads: int | None = None


def configure_for_worker(num_threads: int = 1) -> None:
    """Run detection in this process on the CPU with `num_threads` threads.

    For converter worker processes; call it in the pool initializer, before the
    first detection (importing this module does not import TensorFlow, so this
    costs nothing). Why: the workers already fill the cores, and TensorFlow's
    own thread pools in every worker would oversubscribe them; and on a GPU
    machine every worker's TensorFlow would otherwise claim the GPU's memory.
    """
    global _worker_threads
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    _worker_threads = num_threads


def detector():
    """The process's MTCNN, built on first use (thread-safe).

    Detection on it needs no lock: dfd.predict builds records in several threads
    that share this instance, and concurrent detect_faces calls give the same
    boxes, bit for bit, as sequential ones (MTCNN's stages hold no per-call
    state, and Keras keeps its call context per thread); checked by
    tests/test_faces_predict.py.
    """
    global _detector
    with _detector_lock:
        if _detector is None:
            import tensorflow as tf
            from mtcnn import MTCNN

            if _worker_threads is not None:
                try:
                    tf.config.set_visible_devices([], "GPU")
                    tf.config.threading.set_intra_op_parallelism_threads(_worker_threads)
                    tf.config.threading.set_inter_op_parallelism_threads(_worker_threads)
                except RuntimeError:
                    pass  # TensorFlow already started in this process: its devices and pools are fixed
            # All three stages: the last (ONet) refines the box and rejects most
            # false positives of the first two on textured backgrounds, at a
            # small cost (it only sees the surviving candidates; 0.36 against
            # 0.30 CPU s for 16 frames at 320 px).
            # Always on the CPU, also where a GPU is free: the converter and
            # predict must find the same boxes, to the pixel, and GPU kernels
            # round differently; MTCNN at 320 px is cheap on a CPU anyway.
            _detector = MTCNN(stages="face_and_landmarks_detection", device="CPU:0")
        return _detector


def _check_frames(frames) -> list[np.ndarray]:
    frames = list(frames)
    if not frames:
        raise ValueError("crop_faces needs at least one frame")
    shape = frames[0].shape
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if frame.shape != shape:
            raise ValueError(f"frames of one clip must share one size, got {shape} and {frame.shape}")
    return frames


def detect_faces(frames: Sequence[np.ndarray], detect_size: int) -> list[np.ndarray]:
    """All faces in each frame: one (N_t, 15) float64 array [x0, y0, x1, y1, confidence,
    then the five keypoints of KEYPOINT_NAMES as x, y pairs] per frame, in
    full-resolution pixels.

    Detection runs on a copy whose longest side is `detect_size`: MTCNN's cost
    grows with the pixel count, and a face that fills a useful part of the frame
    is still well over MTCNN's 20 px minimum face there (320 px finds faces
    down to about 6 % of the frame's longest side). Frames already smaller than
    detect_size are not enlarged (that would add cost, not detail).
    """
    frames = _check_frames(frames)
    height, width = frames[0].shape[:2]
    scale = min(1.0, detect_size / max(height, width))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # INTER_AREA: averages the pixels that fold into one, so the small copy is
    # not aliased (aliasing makes faces harder to find).
    small = [frame if scale == 1.0 else cv2.resize(frame, small_size, interpolation=cv2.INTER_AREA)
             for frame in frames]
    found: list[list[np.ndarray]] = [[] for _ in frames]
    for start in range(0, len(small), DETECT_BATCH):
        batch = small[start:start + DETECT_BATCH]
        rows = detector().detect_faces(batch, box_format="xyxy", output_type="numpy")
        # MTCNN 1.0's numpy rows: [image index, x0, y0, x1, y1, confidence, the five
        # keypoints' x, then their y] (mtcnn.utils.landmarks.parse_landmarks reads them so).
        for row in np.asarray(rows).reshape(-1, 16):
            keypoints = np.stack([row[6:11], row[11:16]], axis=1).reshape(-1)   # x, y pairs
            found[start + int(row[0])].append(np.concatenate([row[1:6], keypoints]))
    # Back to full-resolution pixels: divide by the actual per-axis ratio, which
    # rounding the small copy's size made slightly different from `scale`.
    ratio = np.ones(15)
    if scale != 1.0:
        ratio = np.array([small_size[0] / width, small_size[1] / height] * 2 + [1.0]
                         + [small_size[0] / width, small_size[1] / height] * 5)
    return [np.asarray(rows, np.float64).reshape(-1, 15) / ratio for rows in found]


def crop_faces(frames: Sequence[np.ndarray], spec) -> FaceCrops:
    """Square crops of the clip's main face, resized to spec.size.

    frames: full-resolution RGB uint8 frames of one clip, in time order (one
    frame for an image), all the same size. spec: a PreprocessSpec (or any
    object with size, face_margin, face_detect_size, max_no_face_fraction).
    Raises NoFaceError when more than spec.max_no_face_fraction of the frames
    have no face of the track.
    """
    frames = _check_frames(frames)
    height, width = frames[0].shape[:2]
    detections = detect_faces(frames, spec.face_detect_size)
    boxes, confidence, keypoints = face_tracks.track_values(detections, face_tracks.track_rows(detections))
    missing = int(np.isnan(boxes[:, 0]).sum())
    if missing > spec.max_no_face_fraction * len(frames):
        # Starts with "no face" so skipped.csv can be filtered by reason.
        raise NoFaceError(f"no face: none found in {missing} of {len(frames)} frames "
                          f"(more than max_no_face_fraction={spec.max_no_face_fraction})")
    if missing == len(frames):
        # Only reachable with max_no_face_fraction=1.0 (the user asked never to
        # skip): with nothing to track, the largest centred square stands in.
        side = min(width, height)
        boxes[:] = [(width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2]
        squares = face_tracks.crop_squares(boxes, 1.0, width, height)
        crop_keypoints = None
    else:
        boxes = face_tracks.smooth_boxes(face_tracks.fill_missing(boxes))
        squares = face_tracks.crop_squares(boxes, spec.face_margin, width, height)
        # Missed frames get keypoints interpolated like their boxes. The keypoints are not
        # smoothed: they are placed in each frame's own (smoothed) crop, where the face is.
        crop_keypoints = (None if keypoints is None else
                          face_tracks.keypoints_in_crops(face_tracks.fill_missing(keypoints), squares))
    crops = np.empty((len(frames), spec.size, spec.size, 3), np.uint8)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, squares, strict=True)):
        # The converter's resize of whole frames: INTER_AREA when shrinking (no aliasing), INTER_LINEAR
        # when enlarging a small face (INTER_AREA degenerates to blocky nearest-neighbour there).
        crops[i] = resize_frame(frame[y0:y1, x0:x1], spec.size)
    normalised = (squares / np.array([width, height, width, height])).astype(np.float32)
    return FaceCrops(crops=crops, boxes=normalised, confidence=confidence.astype(np.float32),
                     keypoints=crop_keypoints)
