"""Scoring image and video files with a trained model, preprocessed by the converter's own code.

Each file becomes a record through dfd.preprocess.records.make_record — the function
the converter writes shards with — and that record is parsed and decoded with
dfd.data.schema like every training batch. So predict sees exactly what training
saw (sampling, resizing, the JPEG round trip, and the face crop of
face_crop=mtcnn), with no second copy of the preprocessing to drift. A file
where the converter would find no face gets an `error` entry starting
'no face' (the reason skipped.csv gives), and the other files are still scored.

An image model given a video scores `video_frames` frames sampled as the
converter would, and the video's score is the `aggregate` of its frame scores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Iterable

import tensorflow as tf

from dfd.data import schema
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import metrics
from dfd.evaluation.loading import LoadedModel
from dfd.preprocess import media, records, video_reader

PROGRESS_ABOVE = 5   # files; fewer finish before progress lines would help


@dataclasses.dataclass
class FileResult:
    path: str
    kind: str | None = None
    fake_probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    frames_used: int | None = None
    frame_indices: list[int] | None = None
    frame_scores: list[float] | None = None
    temperature: float | None = None   # set when P(fake) is calibrated (calibration.json)
    explanation: str | None = None     # the Grad-CAM picture (dfd.predict --explain=DIR)
    error: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


def find_files(paths: Iterable[str], notes: list[str] | None = None) -> list[str]:
    """Files named and the image/video files (by extension) under folders named (recursive, sorted).

    Folders are walked as the converter walks a source: hidden files and folders (".git", macOS "._clip.mp4"
    resource forks) are left out, and links to folders are followed, but never round a loop. `notes` receives
    one line per thing left out that way (dfd.predict prints them).
    """
    notes = notes if notes is not None else []
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += _folder_files(Path(path), notes)
        else:
            found.append(path)   # a missing or odd file gets its error entry later
    return found


def _folder_files(root: Path, notes: list[str]) -> list[str]:
    found, hidden = [], []

    def visit(folder: Path, ancestors: frozenset) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            notes.append(f"{folder}: cannot read folder ({error.strerror or error}), not scanned")
            return
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith("."):
                if _is_dir(entry):
                    hidden.append(str(path))
                continue
            if not _is_dir(entry):
                # Regular files only (links to them too): reading a FIFO or a device named .mp4 never ends.
                if media.extension_kind(entry.name) is not None and entry.is_file():
                    found.append(str(path))
                continue
            real = os.path.realpath(path)
            if real in ancestors:   # a link to a folder above it: following it would never end
                notes.append(f"{path}: a link loop (to {real}), not followed")
                continue
            visit(path, ancestors | {real})

    visit(root, frozenset({os.path.realpath(root)}))
    if hidden:
        notes.append(f"{len(hidden)} hidden folder(s) not scanned: {', '.join(hidden[:3])}"
                     + (", ..." if len(hidden) > 3 else ""))
    return sorted(found)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()   # follows links
    except OSError:
        return False



def detect_kind(path: str) -> str:
    """'image' or 'video' from the file's first bytes, as the converter judges them; ValueError otherwise
    (and for anything but a regular file: a FIFO would block, a device never end).

    The name is never trusted: a text file named .jpg given to a video model was "an image it cannot score".
    """
    size, header = media.read_header(path)
    if size == 0:
        raise ValueError("empty file (0 bytes)")
    kind = media.sniff(header)
    if kind is None:
        named = os.path.splitext(path)[1] if media.extension_kind(path) else ""
        raise ValueError("not an image or video file (unrecognised content"
                         + (f" despite its {named} extension)" if named else ")"))
    return kind


def spec_for(model_spec: PreprocessSpec, scores_frames: bool, kind: str, video_frames: int) -> PreprocessSpec:
    """The preprocessing for a file of `kind` under a model trained with `model_spec`.

    The model's own spec when the kinds match. An image model (`scores_frames`) also
    scores the other kind through the same frame pipeline (size, encoding, face crop):
    a video trained on images gets `video_frames` frames sampled as the converter
    samples them; an image given to an image model trained on video frames is one frame.
    """
    if kind == model_spec.kind:
        return model_spec
    if not scores_frames:
        raise ValueError(f"the model scores videos ({model_spec.num_frames} frames per clip); it cannot score an image")
    if kind == "video":
        return dataclasses.replace(model_spec, kind="video", num_frames=video_frames)
    return dataclasses.replace(model_spec, kind="image", num_frames=1)


def file_record(path: str, spec: PreprocessSpec, max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS) -> bytes:
    """The file's record exactly as the converter writes it (label and group are placeholders)."""
    return records.make_record(path, spec, label=0, group="", source=path, max_frame_pixels=max_frame_pixels)


@functools.lru_cache(maxsize=8)
def _decoder(shape: schema.RecordShape):
    # A graph function, as in the training pipeline: decode_frames' JPEG map runs in parallel only in a graph.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(serialized):
        parsed = schema.parse_batch(serialized, shape, full=True)
        parsed[schema.FRAMES] = schema.decode_frames(parsed[schema.FRAMES], shape)
        return parsed
    return decode


def decode_records(serialized: list[bytes], spec: PreprocessSpec) -> dict:
    """Records to numpy: "frames" uint8 (B, T, H, W, 3) and the per-record fields, via dfd.data.schema."""
    return {key: value.numpy() for key, value in _decoder(spec.record_shape)(tf.constant(serialized)).items()}


def _prepare(path: str, loaded: LoadedModel, video_frames: int, max_frame_pixels: int):
    try:
        kind = detect_kind(path)
        spec = spec_for(loaded.spec, loaded.scores_frames, kind, video_frames)
        return kind, spec, file_record(path, spec, max_frame_pixels)
    except MemoryError:
        return None, None, "out of memory while decoding"
    except Exception as error:  # noqa: BLE001 - one broken file must never stop the others
        return None, None, str(error).splitlines()[0] if str(error) else type(error).__name__


def _score_group(loaded: LoadedModel, spec: PreprocessSpec, items: list, aggregate: str, on_frames=None) -> None:
    """Scores the records of one spec at once and fills their FileResults; on_frames(result, frames) sees the crops."""
    decoded = decode_records([record for _, record in items], spec)
    scores = loaded.score_clips(decoded[schema.FRAMES])
    for index, (result, _) in enumerate(items):
        num_frames = spec.num_frames - int(decoded[schema.PADDED_FRAMES][index])
        result.frames_used = spec.num_frames
        if spec.kind == "video":
            result.frame_indices = [int(i) for i in decoded[schema.FRAME_INDICES][index]]
        if scores.ndim == 2 and spec.num_frames > 1:
            # Padding repeats the last frame; its copies are not scored twice.
            frame_scores = scores[index][:num_frames]
            result.frame_scores = [round(float(score), 6) for score in frame_scores]
            result.frames_used = num_frames
            probability = metrics.aggregate_scores(frame_scores, [0] * num_frames, aggregate)[1][0]
        else:
            probability = scores[index] if scores.ndim == 1 else scores[index][0]
        result.fake_probability = round(float(probability), 6)
        result.threshold = round(loaded.threshold, 6)
        if loaded.temperature != 1.0:
            result.temperature = round(loaded.temperature, 6)
        result.label = schema.LABEL_NAMES[int(probability >= loaded.threshold)]
        if on_frames is not None:
            on_frames(result, decoded[schema.FRAMES][index][:num_frames])


def predict_files(loaded: LoadedModel, paths: list[str], batch_size: int = 32, video_frames: int = 16,
                  aggregate: str = "mean", progress=sys.stderr, on_frames=None,
                  max_frame_pixels: int = video_reader.MAX_FRAME_PIXELS) -> list[FileResult]:
    """One FileResult per path, in order; unusable files carry `error` and never stop the others.

    on_frames(result, frames): called for each scored file with its decoded crops uint8 (T, H, W, 3),
    padding removed (dfd.predict --explain, dfd.serve). A video with frames over max_frame_pixels
    (--max_frame_pixels) is an error entry, refused before its frames are decoded.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if max_frame_pixels < 1:
        raise ValueError(f"--max_frame_pixels must be >= 1, got {max_frame_pixels}")
    if aggregate not in metrics.AGGREGATE_METHODS:
        raise ValueError(f"--aggregate must be one of {metrics.AGGREGATE_METHODS}, got {aggregate!r}")
    results = [FileResult(path) for path in paths]
    start = time.perf_counter()
    # Reading and decoding media is OpenCV work that releases the GIL: threads overlap it.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for begin in range(0, len(paths), batch_size):
            chunk = list(range(begin, min(begin + batch_size, len(paths))))
            groups: dict[PreprocessSpec, list] = {}
            for index, (kind, spec, record) in zip(chunk, pool.map(
                    lambda path: _prepare(path, loaded, video_frames, max_frame_pixels), [paths[i] for i in chunk]),
                    strict=True):
                if spec is None:
                    results[index].error = record
                    continue
                results[index].kind = kind
                groups.setdefault(spec, []).append((results[index], record))
            for spec, items in groups.items():
                try:
                    _score_group(loaded, spec, items, aggregate, on_frames)
                except Exception as error:  # noqa: BLE001 - a failing batch must not lose the other batches
                    for result, _ in items:
                        result.error = f"scoring failed: {error}"
            if progress is not None and len(paths) > PROGRESS_ABOVE:
                print(f"scored {chunk[-1] + 1}/{len(paths)} files", file=progress, flush=True)
    if progress is not None:
        elapsed = time.perf_counter() - start
        scored = sum(result.error is None for result in results)
        print(f"{scored} of {len(paths)} files scored in {elapsed:.1f} s "
              f"({len(paths) / max(elapsed, 1e-9):.1f} files/s)", file=progress, flush=True)
    return results
