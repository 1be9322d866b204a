"""One thread owns the model and scores uploads in batches: those that arrive together share a batch.

Keras models are not meant to be called from many threads at once, and a batch of N files costs far
less than N single calls (one traced call, OpenCV decoding overlapped in predict_files' thread pool).
A request waits at most `window_s` for company; under load the queue fills while a batch is scored,
so the next batch takes everything waiting (up to `batch_size`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import queue
import threading
import time

import cv2
import numpy as np

from dfd.evaluation import explain, predict
from dfd.preprocess.video_reader import MAX_FRAME_PIXELS


def overlay_png(frame: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> bytes:
    """One face crop (uint8 RGB) with its heatmap in the jet colour map, as PNG bytes."""
    colours = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)   # BGR
    blended = cv2.addWeighted(frame[..., ::-1], 1 - alpha, colours, alpha, 0)
    scale = max(1, 128 // max(frame.shape[:2]))   # tiny crops are enlarged for the page
    if scale > 1:
        blended = cv2.resize(blended, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, encoded = cv2.imencode(".png", blended)
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


class Batcher:
    def __init__(self, loaded, batch_size: int = 16, window_s: float = 0.02, video_frames: int = 16,
                 aggregate: str = "mean", explain_crops: bool = True, max_frame_pixels: int = MAX_FRAME_PIXELS):
        self.loaded, self.batch_size, self.window_s = loaded, batch_size, window_s
        self.video_frames, self.aggregate, self.max_frame_pixels = video_frames, aggregate, max_frame_pixels
        self.explainable = explain_crops
        if explain_crops:
            try:
                explain.feature_map_path(loaded.model)
            except ValueError:
                self.explainable = False
        self.batches = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="dfd-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, path: str, with_crops: bool) -> concurrent.futures.Future:
        """A future for (FileResult, crops: list of PNG data URIs or None, seconds)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((path, with_crops, future, time.perf_counter()))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> list | None:
        first = self._queue.get()
        if first is None:
            return None
        items = [first]
        deadline = time.perf_counter() + self.window_s
        while len(items) < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)   # stop after this batch
                break
            items.append(item)
        return items

    def _loop(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            try:
                self._score(items)
            except Exception as error:  # noqa: BLE001 - the server keeps serving; each request gets the error
                for _, _, future, _ in items:
                    if not future.done():
                        future.set_exception(error)

    def _score(self, items: list) -> None:
        crops: dict[int, np.ndarray] = {}

        def keep(result, frames):
            crops[id(result)] = frames

        results = predict.predict_files(
            self.loaded, [path for path, _, _, _ in items], batch_size=len(items), video_frames=self.video_frames,
            aggregate=self.aggregate, progress=None, on_frames=keep, max_frame_pixels=self.max_frame_pixels)
        self.batches += 1
        for (_, with_crops, future, started), result in zip(items, results, strict=True):
            pictures = None
            if with_crops and id(result) in crops:
                frames = crops[id(result)]
                heatmaps = np.zeros(frames.shape[:3], np.float32)
                if self.explainable:
                    try:
                        heatmaps = explain.file_heatmaps(self.loaded, frames)
                    except Exception:  # noqa: BLE001 - a failed heatmap still leaves the verdict to show
                        pass
                pictures = ["data:image/png;base64," + base64.b64encode(overlay_png(frame, heatmap)).decode()
                            for frame, heatmap in zip(frames, heatmaps, strict=True)]
            future.set_result((result, pictures, time.perf_counter() - started))
