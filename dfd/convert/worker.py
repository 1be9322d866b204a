"""What a converter worker process runs: read files, return RecordContent or SkippedFile.

Imports no TensorFlow (see dfd.convert.__init__): workers receive the spec as a
plain namespace and send back numpy frames; the parent serializes and writes.
"""

from __future__ import annotations

import os
import signal
import types

import cv2

from dfd.preprocess import faces  # TensorFlow-free until a face is detected
from dfd.preprocess.records import try_read_content
from dfd.preprocess.video_reader import MAX_FRAME_PIXELS


def init_worker() -> None:
    # One OpenCV thread per worker: the workers already fill the cores, and
    # OpenCV's own pool in every worker would oversubscribe them.
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def init_worker_process() -> None:
    """Pool initializer: init_worker, and face detection (if asked for) on one
    CPU thread, for the same reason. Not for the in-process path, where it would
    pin the caller's own TensorFlow to one thread."""
    init_worker()
    faces.configure_for_worker(1)


def read_chunk(chunk: list[tuple[int, str]], spec: dict, max_frame_pixels: int = MAX_FRAME_PIXELS) -> list:
    """[(position, path)] -> [(position, RecordContent | SkippedFile)], in order."""
    namespace = types.SimpleNamespace(**spec)
    return [(position, try_read_content(path, namespace, max_frame_pixels)) for position, path in chunk]


def serve(connection, spec: dict, max_frame_pixels: int) -> None:
    """A worker process of dfd.convert.pool: (position, path) in, (position, result) out, one file at a time,
    in order, until it receives None or the parent goes away."""
    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it (one line, its pool
    # stops the workers), not a traceback from each worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker_process()
    namespace = types.SimpleNamespace(**spec)
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        position, path = task
        connection.send((position, try_read_content(path, namespace, max_frame_pixels)))
