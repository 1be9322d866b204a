"""Face cropping cost per clip: `python -m dfd.bench faces`.

Writes a 1080p mp4 (the astronaut's face moving and zooming over noise),
then times, per --face_detect_size, for --num_frames uniformly sampled frames:
  decode      the frames, read by the converter's reader (one in-order pass)
  detect      dfd.preprocess.faces.detect_faces on them (downscale included)
  crop        dfd.preprocess.faces.crop_faces (detect + track + smooth + crop)
  clip        dfd.preprocess.records.read_content with --face_crop=mtcnn: the
              whole reading side of converting one clip (decode + crop)
and the same detection on every k-th frame (--detect_every) to see whether
detecting fewer frames and interpolating would be worth a flag.
The first call (building MTCNN, tracing its graphs) is timed separately.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import tempfile
import time

import cv2
import numpy as np

from dfd import bench
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    num_frames: int = setting(16, "frames sampled per clip")
    width: int = setting(1920, "video width")
    height: int = setting(1080, "video height")
    source_frames: int = setting(150, "frames in the generated video (5 s at 30 fps)")
    face_detect_sizes: tuple = setting((320, 640), "detect sizes to time")
    detect_every: tuple = setting((2, 4), "also time detection on every k-th frame")
    repeats: int = setting(3, "timed repeats (median reported)")
    video: str = setting("h264", "codec of the generated video", choices=("h264", "mp4v"))
    size: int = setting(224, "crop size")


def write_video(path: str, width: int, height: int, num_frames: int, writer_name: str) -> None:
    """A face crossing the frame and zooming over a panning noise background
    (the pan gives the decoder real motion to reconstruct, as a handheld clip does).

    writer_name: "h264" (libx264 through imageio-ffmpeg's bundled ffmpeg; what
    phones and most datasets use) or "mp4v" (OpenCV's own MPEG-4 part 2 writer,
    much cheaper to decode).
    """
    from dfd.testing.face_frames import face_frame, noise_background

    rng = np.random.default_rng(0)
    pan = width // 4
    background = noise_background(rng, width + pan, height)

    def frames():
        for t in range(num_frames):
            a = t / max(1, num_frames - 1)
            shift = int(a * pan)
            centre = (width * (0.3 + 0.4 * a), height * (0.45 + 0.05 * np.sin(6 * a)))
            frame, _ = face_frame(background[:, shift:shift + width], centre, face_side=height * (0.18 + 0.08 * a))
            yield frame

    if writer_name == "h264":
        import imageio_ffmpeg

        # macro_block_size=8: 1080 is not a multiple of 16, and the default
        # would resize the frames to 1088.
        writer = imageio_ffmpeg.write_frames(path, (width, height), fps=30, codec="libx264", macro_block_size=8,
                                             output_params=["-preset", "veryfast"])
        writer.send(None)
        for frame in frames():
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    try:
        for frame in frames():
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def read_uniform(path: str, num_frames: int) -> list[np.ndarray]:
    """The converter's reader: num_frames evenly spaced RGB frames, upright, in one
    in-order pass over the whole file (it counts the frames it decodes)."""
    from dfd.preprocess.video_reader import sample_video_frames

    return sample_video_frames(path, num_frames, "uniform").frames


def _median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (all threads).
    Other programs loading the machine inflate the wall time, far less the CPU time."""
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str]) -> None:
    values = bench.parse(Settings, argv)
    from dfd.data.preprocessing import PreprocessSpec
    from dfd.preprocess import faces, records

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "clip.mp4")
        start = time.perf_counter()
        write_video(path, values.width, values.height, values.source_frames, values.video)
        print(f"wrote {values.width}x{values.height} {values.video} mp4, {values.source_frames} frames "
              f"in {time.perf_counter() - start:.1f} s")
        frames = read_uniform(path, values.num_frames)
        if len(frames) != values.num_frames:
            raise RuntimeError(f"read {len(frames)} frames, expected {values.num_frames}")

        start = time.perf_counter()
        faces.detect_faces(frames[:1], int(values.face_detect_sizes[0]))
        print(f"first call (build MTCNN, trace graphs): {time.perf_counter() - start:.2f} s")

        decode = _median_seconds(lambda: read_uniform(path, values.num_frames), values.repeats)
        rows = []
        for detect_size in map(int, values.face_detect_sizes):
            spec = PreprocessSpec(kind="video", num_frames=values.num_frames, size=values.size,
                                  face_crop="mtcnn", face_detect_size=detect_size)
            faces.crop_faces(frames, spec)  # warm-up: graphs for this input size
            found = sum(len(rows_t) > 0 for rows_t in faces.detect_faces(frames, detect_size))
            detect = _median_seconds(functools.partial(faces.detect_faces, frames, detect_size), values.repeats)
            crop = _median_seconds(functools.partial(faces.crop_faces, frames, spec), values.repeats)
            # The converter's own path for one file (and predict's): check, sample, crop.
            clip = _median_seconds(functools.partial(records.read_content, path, spec), values.repeats)
            every = {}
            for k in map(int, values.detect_every):
                subset = frames[::k]
                faces.detect_faces(subset, detect_size)  # warm-up: another batch size
                every[k] = _median_seconds(functools.partial(faces.detect_faces, subset, detect_size), values.repeats)
            rows.append((detect_size, found, decode, detect, crop, clip, every))

    every_header = "".join(f" detect 1/{k} |" for k in map(int, values.detect_every))
    print(f"\nseconds per clip of {values.num_frames} frames from a {values.width}x{values.height} "
          f"{values.video} mp4 of {values.source_frames} frames, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}; cells: wall s (CPU s)")
    print(f"| face_detect_size | faces found | decode | detect | crop (detect+track+crop) | "
          f"whole clip (decode+crop) |{every_header}")
    print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(values.detect_every))

    def cell(seconds):
        return f"{seconds[0]:.2f} ({seconds[1]:.2f})"

    for detect_size, found, decode, detect, crop, clip, every in rows:
        every_cells = "".join(f" {cell(every[k])} |" for k in map(int, values.detect_every))
        print(f"| {detect_size} | {found}/{values.num_frames} | {cell(decode)} | {cell(detect)} | {cell(crop)} | "
              f"{cell(clip)} |{every_cells}")
    detect_size, clip = rows[0][0], rows[0][5]
    print(f"whole clip at face_detect_size={detect_size}: {clip[0]:.2f} s wall, {clip[1]:.2f} s CPU per clip "
          f"(target <= 2 s: {'met' if clip[0] <= 2 else 'missed'} on wall time)")
