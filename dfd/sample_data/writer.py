"""Plans and writes the sample dataset as real mp4 and JPEG files.

Layout under the output folder:
    videos/{train,val,test}/{real,fake}/*.mp4
    images/{train,val,test}/{real,fake}/*.jpg
    videos.csv, images.csv   path,label,split,group,swap_source (paths relative to the CSV)

Every split draws its own identities, so no person appears in two splits
(a detector could otherwise score well on test by recognising faces it trained
on). Within a split each identity is the target of real and fake examples
alike, so identity says nothing about the label. Every file is drawn from its
own random generator seeded by (seed, kind, split, label, index): the same seed
gives byte-identical files whatever the order or number of files written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import math
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from dfd.sample_data import clips
from dfd.sample_data.faces import random_identity

SPLITS = ("train", "val", "test")
LABELS = ("real", "fake")
KINDS = ("videos", "images")
_EXTENSIONS = {"videos": ".mp4", "images": ".jpg"}
_CSV_FIELDS = ("path", "label", "split", "group", "swap_source")


@dataclasses.dataclass(frozen=True)
class SampleItem:
    """One file to write: which identity it shows and, for a fake, whose face was pasted in."""

    kind: str
    split: str
    label: str
    index: int
    target_id: int
    source_id: int | None

    @property
    def relative_path(self) -> str:
        return f"{self.kind}/{self.split}/{self.label}/{self.label}_{self.index:04d}{_EXTENSIONS[self.kind]}"


def split_counts(per_class: int | Mapping[str, int], val_fraction: float,
                 test_fraction: float) -> dict[str, int]:
    """Examples per class in each split: an explicit mapping, or a total cut by fractions."""
    if isinstance(per_class, Mapping):
        unknown = set(per_class) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
        counts = {split: int(per_class.get(split, 0)) for split in SPLITS}
    else:
        total = int(per_class)
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1, "
                             f"got {val_fraction} and {test_fraction}")
        val = round(total * val_fraction)
        test = round(total * test_fraction)
        # A requested split gets at least one example per class when the total allows it.
        if val_fraction > 0 and val == 0 and total >= 3:
            val = 1
        if test_fraction > 0 and test == 0 and total >= 3:
            test = 1
        counts = {"train": total - val - test, "val": val, "test": test}
    if any(count < 0 for count in counts.values()):
        raise ValueError(f"example counts must not be negative, got {counts}")
    return counts


def plan_dataset(video_counts: Mapping[str, int], image_counts: Mapping[str, int]) -> list[SampleItem]:
    """Assigns identities to every file; identity pools are disjoint across splits.

    Identities are only numbered here; their looks come from (seed, number) when drawn.
    """
    items = []
    next_identity = 0
    for kind, counts in (("videos", video_counts), ("images", image_counts)):
        for split in SPLITS:
            count = counts.get(split, 0)
            if count == 0:
                continue
            # Two examples per identity (one real, one fake), and at least two
            # identities so a fake's source is never its own target.
            pool_size = max(2, math.ceil(count / 2))
            pool = list(range(next_identity, next_identity + pool_size))
            next_identity += pool_size
            for index in range(count):
                target = pool[index % pool_size]
                items.append(SampleItem(kind, split, "real", index, target, None))
                shift = 1 + (index // pool_size) % (pool_size - 1)
                source = pool[(index % pool_size + shift) % pool_size]
                items.append(SampleItem(kind, split, "fake", index, target, source))
    return items


def _item_rng(seed: int, item: SampleItem) -> np.random.Generator:
    return np.random.default_rng([seed, KINDS.index(item.kind), SPLITS.index(item.split),
                                  LABELS.index(item.label), item.index])


def _identity(seed: int, identity_id: int):
    # A separate stream per identity: the same person looks the same in every file.
    return random_identity(np.random.default_rng([seed, 1_000_003, identity_id]), identity_id)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Writes uint8 RGB frames (T, H, W, 3) as an mp4 (MPEG-4 Part 2) through OpenCV."""
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open an mp4 writer for {path}: "
                           "this OpenCV build lacks an mp4v encoder (install opencv-python-headless)")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def write_image(path: Path, image: np.ndarray, quality: int = 95) -> None:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path} as JPEG")
    path.write_bytes(encoded.tobytes())


@dataclasses.dataclass
class SampleSummary:
    """What was written: counts[kind][split][label], bytes and seconds."""

    output: Path
    counts: dict
    total_bytes: int
    seconds: float

    def format(self) -> str:
        lines = [f"Synthetic sample data (for trying dfd only, not for judging a detector) in {self.output}"]
        for kind in KINDS:
            if kind not in self.counts:
                continue
            parts = [f"{split} {self.counts[kind][split]['real']} real + {self.counts[kind][split]['fake']} fake"
                     for split in SPLITS if split in self.counts[kind]]
            lines.append(f"  {kind}: " + ", ".join(parts))
        num_files = sum(n for kind in self.counts.values() for split in kind.values() for n in split.values())
        lines.append(f"  {num_files} files, {self.total_bytes / 1e6:.1f} MB in {self.seconds:.1f} s")
        return "\n".join(lines)


def _clear_previous(output: Path) -> None:
    """Removes an earlier sample dataset from `output`, but never someone else's files."""
    ours = [output / kind for kind in KINDS] + [output / f"{kind}.csv" for kind in KINDS]
    present = [path for path in ours if path.exists()]
    if not present:
        return
    if not any((output / f"{kind}.csv").exists() for kind in KINDS):
        raise ValueError(f"{output} already holds {present[0].name} but no videos.csv/images.csv, so it "
                         "was not written by make_sample_data; choose an empty or new --output")
    for path in present:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _write_item(item: SampleItem, *, output: Path, seed: int, frames_per_video: int, height: int,
                width: int, image_size: int, fps: float) -> int:
    """Draws and writes one file; returns its size in bytes."""
    path = output / item.relative_path
    rng = _item_rng(seed, item)
    target = _identity(seed, item.target_id)
    source = _identity(seed, item.source_id) if item.source_id is not None else None
    # Written under a temporary name (same extension: OpenCV picks the container
    # from it) so an interrupted run never leaves a file that looks complete.
    partial = path.with_name(f".partial-{path.name}")
    if item.kind == "videos":
        write_video(partial, clips.render_clip(rng, target, frames_per_video, height, width, source), fps)
    else:
        write_image(partial, clips.render_image(rng, target, image_size, source))
    os.replace(partial, path)
    return path.stat().st_size


def write_sample_dataset(
    output: str | Path,
    *,
    videos_per_class: int | Mapping[str, int] = 80,
    images_per_class: int | Mapping[str, int] = 40,
    seed: int = 0,
    frames_per_video: int = 20,
    video_size: tuple[int, int] = (128, 128),
    image_size: int = 256,
    fps: float = 24.0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    workers: int = 1,
) -> SampleSummary:
    """Writes the synthetic sample dataset under `output` and returns what it wrote.

    `videos_per_class` / `images_per_class` are totals per class split by the
    fractions (80 -> train 48, val 16, test 16), or a {split: count} mapping.
    `video_size` is (width, height). Zero skips that kind. Re-running replaces an
    earlier sample dataset in the same folder. `workers` > 1 draws files in that
    many processes; the files are the same either way.
    """
    start = time.perf_counter()
    width, height = video_size
    if min(width, height) < 32 or image_size < 32:
        raise ValueError(f"video_size {video_size} and image_size {image_size} must be at least 32 "
                         "pixels, or the faces have no room for eyes and mouth")
    if frames_per_video < 1:
        raise ValueError(f"frames_per_video must be at least 1, got {frames_per_video}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    video_counts = split_counts(videos_per_class, val_fraction, test_fraction)
    image_counts = split_counts(images_per_class, val_fraction, test_fraction)
    items = plan_dataset(video_counts, image_counts)

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _clear_previous(output)
    counts: dict = {}
    rows = collections.defaultdict(list)
    for kind_split in {(item.kind, item.split) for item in items}:
        for label in LABELS:
            (output / kind_split[0] / kind_split[1] / label).mkdir(parents=True, exist_ok=True)
    settings = dict(output=output, seed=seed, frames_per_video=frames_per_video, height=height,
                    width=width, image_size=image_size, fps=fps)
    if workers == 1:
        sizes = [_write_item(item, **settings) for item in items]
    else:
        # Spawned, not forked: the caller may have TensorFlow loaded, which does not survive a fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            sizes = list(pool.map(functools.partial(_write_item, **settings), items, chunksize=4))
    total_bytes = sum(sizes)
    for item in items:
        counts.setdefault(item.kind, {}).setdefault(item.split, {"real": 0, "fake": 0})[item.label] += 1
        rows[item.kind].append({
            "path": item.relative_path, "label": item.label, "split": item.split,
            "group": f"id{item.target_id:05d}",
            "swap_source": "" if item.source_id is None else f"id{item.source_id:05d}",
        })
    for kind, kind_rows in rows.items():
        with open(output / f"{kind}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
            writer.writeheader()
            writer.writerows(kind_rows)
    return SampleSummary(output=output, counts=counts, total_bytes=total_bytes,
                         seconds=time.perf_counter() - start)
