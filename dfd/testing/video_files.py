"""A reference video reader for tests and benchmarks.

It decodes every frame with plain `read()`: deliberately the naive way, so the
converter's in-order grab/retrieve reader can be checked against it, and so the
seed's approach (decode everything, then pick) can be timed.
"""

from __future__ import annotations

import cv2
import numpy as np


def read_all_frames(path, rgb: bool = True) -> list[np.ndarray]:
    """Every decoded frame of a video, in order (RGB unless rgb=False)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame)
    capture.release()
    return frames
