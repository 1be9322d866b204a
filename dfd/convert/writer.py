"""Sharded, atomic, resumable TFRecord writing.

The shard plan (which item goes to which shard) is a pure function of the item
list, the seed and the records per shard, so re-running the same command plans
the same shards and a resumed run writes the same bytes as a clean one.

Atomic: a shard is written as `<name>.tmp`, flushed to disk and renamed; a file
under a final shard name is always complete. Which shards are complete is kept
in `.progress.json` (rewritten atomically after every shard) with their counts,
so a resumed run skips them and still knows what they hold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
from pathlib import Path

from dfd.atomic_files import TMP_SUFFIX
from dfd.atomic_files import write_text as atomic_write_text
from dfd.data.metadata import METADATA_FILE, SKIPPED_FILE, SPLITS, shard_name

PROGRESS_FILE = ".progress.json"


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    total: int
    positions: tuple[int, ...]  # indices into the item list, in writing order

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index, self.total)


def plan_shards(splits: list[str], labels: list[int], seed: int, records_per_shard: int) -> list[ShardPlan]:
    """Shards for items whose split and label are `splits[i]`, `labels[i]`.

    Within a split, each class is shuffled with the seed and the classes are
    interleaved evenly before the list is cut into equal consecutive runs, so
    every shard holds both classes in their overall proportion; each shard's
    order is shuffled again so a reader never sees a regular real/fake rhythm.
    """
    if records_per_shard < 1:
        raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
    plans = []
    for split in SPLITS:
        rng = random.Random(f"{seed}:{split}")
        keyed = []
        for label in sorted(set(labels)):
            members = [i for i, (item_split, item_label) in enumerate(zip(splits, labels, strict=True))
                       if item_split == split and item_label == label]
            rng.shuffle(members)
            # Rank within the class, as a fraction of the class: equal fractions interleave.
            keyed += [((rank + rng.random()) / len(members), position) for rank, position in enumerate(members)]
        positions = [position for _, position in sorted(keyed)]
        if not positions:
            continue
        total = math.ceil(len(positions) / records_per_shard)
        for index in range(total):
            begin, end = index * len(positions) // total, (index + 1) * len(positions) // total
            shard = positions[begin:end]
            rng.shuffle(shard)
            plans.append(ShardPlan(split, index, total, tuple(shard)))
    return plans


class DamagedProgressError(ValueError):
    """A .progress.json that is not the record dfd writes: which shards are complete is unknown."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path} is damaged ({problem}): it records which shards of this conversion are complete. "
                         "Re-run with --overwrite to convert again from the start (only the files dfd wrote in "
                         f"{path.parent} are replaced)")


def _progress_problem(raw) -> str | None:
    if not isinstance(raw, dict):
        return f"a JSON {type(raw).__name__}, not an object"
    if not isinstance(raw.get("fingerprint"), str) or not isinstance(raw.get("shards"), dict):
        return "no 'fingerprint' and 'shards'"
    for name, info in raw["shards"].items():
        if not isinstance(info, dict) or not all(isinstance(info.get(key), int) for key in ("count", "bytes")):
            return f"shard {name} has no 'count' and 'bytes'"
        if not isinstance(info.get("skipped", []), list):
            return f"shard {name}'s 'skipped' is not a list"
    return None


class Progress:
    """`.progress.json`: the run's fingerprint and every complete shard with its counts."""

    def __init__(self, directory: Path, fingerprint: str, shards: dict | None = None):
        self.path = Path(directory) / PROGRESS_FILE
        self.fingerprint = fingerprint
        self.shards: dict[str, dict] = shards or {}

    @classmethod
    def load(cls, directory: Path) -> "Progress | None":
        """The folder's progress record, None without one; DamagedProgressError when it is not one dfd wrote."""
        path = Path(directory) / PROGRESS_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:   # written atomically: edited or damaged since
            raise DamagedProgressError(path, f"not JSON: {error}") from None
        problem = _progress_problem(raw)
        if problem:
            raise DamagedProgressError(path, problem)
        return cls(directory, raw["fingerprint"], raw["shards"])

    def is_complete(self, name: str) -> bool:
        info = self.shards.get(name)
        path = self.path.parent / name
        return info is not None and path.is_file() and path.stat().st_size == info["bytes"]

    def record(self, name: str, info: dict) -> None:
        self.shards[name] = info
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"fingerprint": self.fingerprint, "shards": self.shards}) + "\n")


class ShardWriter:
    """Writes one shard under a temporary name; close() makes it appear complete."""

    def __init__(self, directory: Path, name: str):
        import tensorflow as tf  # the writing process only

        self.final = Path(directory) / name
        self.tmp = self.final.with_name(name + TMP_SUFFIX)
        if self.tmp.is_symlink():   # TensorFlow's writer would write through it: dfd makes no links
            self.tmp.unlink()
        self._writer = tf.io.TFRecordWriter(str(self.tmp))
        self.count = 0

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.count += 1

    def close(self) -> int:
        """Flushes, renames to the final name, returns the shard's size in bytes."""
        self._writer.close()
        with open(self.tmp, "rb+") as handle:
            os.fsync(handle.fileno())  # data on disk before the rename makes it visible
        os.replace(self.tmp, self.final)
        return self.final.stat().st_size

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


# The names dfd writes into an output folder; nothing else there is ever replaced or deleted.
_SHARD = re.compile(r"^(?:train|val|test)-\d{5}-of-\d{5}\.tfrecord$")
_OWN_NAMES = (METADATA_FILE, SKIPPED_FILE, PROGRESS_FILE)
# A shard's completion note, written beside it by a Beam worker (dfd.convert.beam_engine) and
# folded into .progress.json by the launching process.
_SHARD_DONE = re.compile(r"^\.(?:train|val|test)-\d{5}-of-\d{5}\.tfrecord\.done\.json$")


def is_own_name(name: str) -> bool:
    """A name dfd writes in an output folder: a shard, metadata.json, skipped.csv, .progress.json,
    a Beam worker's shard completion note."""
    return bool(_SHARD.match(name) or _SHARD_DONE.match(name)) or name in _OWN_NAMES


def own_files(directory: Path) -> list[Path]:
    """dfd's own final files in `directory` (temporary ones aside). A link is never dfd's (dfd makes none), so
    --overwrite leaves it, and writing there is refused with its name (dfd.atomic_files)."""
    return sorted(path for path in Path(directory).iterdir()
                  if path.is_file() and not path.is_symlink() and is_own_name(path.name))


def remove_temporary_files(directory: Path) -> int:
    """Deletes dfd's own temporary files (`<shard or metadata name>.tmp`) left by a killed run; returns how many.
    A user's `notes.tmp` is not dfd's and stays."""
    removed = 0
    for path in Path(directory).glob("*" + TMP_SUFFIX):
        if is_own_name(path.name[:-len(TMP_SUFFIX)]):
            path.unlink()
            removed += 1
    return removed
