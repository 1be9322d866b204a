"""metadata.json beside the shards: the dataset's table of contents.

Written by the converter (dfd.convert), read by pipelines, the trainer,
evaluate and verification. Layout:

{
  "schema_version": 1, "writer": "dfd",
  "tool": "dfd.make_tfrecords", "tool_version": "0.1.0", "created": "<ISO time>",
  "source": {"type": "folder|manifest|dfdc|ffpp", "path": "...", ...},
  "preprocessing": {<PreprocessSpec.to_dict()>},
  "features": {<key>: {"dtype": "...", "shape": [...]}},
  "splits": {
    "<split>": {
      "count": N,
      "class_counts": {"real": n0, "fake": n1},
      "shards": [{"file": "<split>-00000-of-00004.tfrecord", "count": n, "bytes": b}, ...]
    }
  },
  "skipped": <files skipped, listed in skipped.csv>,
  "warnings": [<things worth a look: one class, the same content in two splits, ...>],
  "incomplete": "<why>"   (only when the conversion failed: readers refuse the dataset)
}
"writer": "dfd" marks a folder dfd wrote: the converter replaces or deletes files only in such a folder.
`write_metadata` is the one writer (the converter and dfd.testing.fake_shards), `DatasetMetadata` the one reader.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import dfd
from dfd.atomic_files import write_json
from dfd.data import integrity, schema
from dfd.data.preprocessing import PreprocessSpec

METADATA_FILE = "metadata.json"
SKIPPED_FILE = "skipped.csv"
SPLITS = ("train", "val", "test")
WRITER = "dfd"


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def write_metadata(directory: str | Path, *, tool: str, source: dict, preprocessing: PreprocessSpec,
                   splits: dict, skipped: int, features: dict | None = None, warnings: list[str] | None = None,
                   incomplete: str | None = None, created: bool = True) -> dict:
    """Writes directory/metadata.json (atomically) in the layout above and returns what it wrote.

    splits: {split: {"count", "class_counts", "shards": [{"file", "count", "bytes"}, ...]}}.
    features and warnings are left out when None; created=False leaves out the time (fixed bytes for
    a fixed dataset: dfd.testing.fake_shards).
    """
    meta = {"schema_version": schema.SCHEMA_VERSION, "writer": WRITER, "tool": tool, "tool_version": dfd.__version__}
    if created:
        meta["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta.update({"source": source, "preprocessing": preprocessing.to_dict()})
    if features is not None:
        meta["features"] = features
    meta.update({"splits": splits, "skipped": skipped})
    if warnings is not None:
        meta["warnings"] = warnings
    if incomplete:
        meta["incomplete"] = incomplete
    write_json(Path(directory) / METADATA_FILE, meta)
    return meta


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shard_problem(split: str, index: int, shard) -> str | None:
    if not isinstance(shard, dict):
        return f"shard {index} of split '{split}' is {type(shard).__name__}, not an object"
    if not isinstance(shard.get("file"), str) or "/" in shard["file"] or shard["file"] in ("", ".", ".."):
        return f"shard {index} of split '{split}' has no file name"
    for key in ("count", "bytes"):
        if not _is_count(shard.get(key)):
            return f"shard {shard['file']} has no valid {key!r} ({shard.get(key)!r})"
    return None


def _split_problem(split: str, info) -> str | None:
    if not isinstance(info, dict):
        return f"split '{split}' is {type(info).__name__}, not an object"
    if not _is_count(info.get("count")):
        return f"split '{split}' has no valid 'count' ({info.get('count')!r})"
    counts = info.get("class_counts", {})
    if not isinstance(counts, dict) or not all(_is_count(n) for n in counts.values()):
        return f"split '{split}' has no valid 'class_counts' ({counts!r})"
    if not isinstance(info.get("shards"), list):
        return f"split '{split}' has no 'shards' list"
    return next(filter(None, (_shard_problem(split, i, shard) for i, shard in enumerate(info["shards"]))), None)


def layout_problem(raw) -> str | None:
    """What makes `raw` (a parsed metadata.json) unusable to readers, or None: checked once on load, so a
    hand-edited or foreign file is reported by name instead of as a KeyError deep in a reader."""
    if not isinstance(raw, dict):
        return f"it holds a JSON {type(raw).__name__}, not an object"
    if not isinstance(raw.get("preprocessing"), dict):
        return "it has no 'preprocessing' object"
    try:
        PreprocessSpec.from_dict(raw["preprocessing"])
    except (ValueError, TypeError) as error:
        return f"its 'preprocessing' is not valid ({error})"
    if not isinstance(raw.get("splits"), dict):
        return "it has no 'splits' object"
    return next(filter(None, (_split_problem(split, info) for split, info in raw["splits"].items())), None)


class DatasetMetadata:
    """A loaded metadata.json with the questions readers ask of it."""

    def __init__(self, directory: str | Path, raw: dict):
        self.directory = Path(directory)
        self.raw = raw

    @classmethod
    def load(cls, directory: str | Path) -> "DatasetMetadata":
        directory = Path(directory)
        path = directory / METADATA_FILE
        if not path.is_file():
            raise ValueError(
                f"{directory} is not a dfd TFRecord folder: {METADATA_FILE} is missing. "
                "Convert a dataset first: python tools/make_tfrecords.py --source=DIR --output=DIR")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-run the conversion") from error
        except UnicodeDecodeError as error:
            raise ValueError(f"{path} is not text ({error.reason} at byte {error.start}); re-run the conversion"
                             ) from None
        problem = layout_problem(raw)
        if problem:
            raise ValueError(f"{path} is not a dfd metadata.json: {problem}. Re-run the conversion that wrote the "
                             "folder (the same make_tfrecords command) to write it again")
        return cls(directory, raw)

    @property
    def preprocessing(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.raw["preprocessing"])

    @property
    def splits(self) -> list[str]:
        return list(self.raw.get("splits", {}))

    def _split(self, split: str) -> dict:
        splits = self.raw.get("splits", {})
        if split not in splits:
            raise ValueError(f"{self.directory} has no '{split}' split (it has: {', '.join(splits) or 'none'})")
        return splits[split]

    def count(self, split: str) -> int:
        return int(self._split(split)["count"])

    def class_counts(self, split: str) -> dict[str, int]:
        return {name: int(n) for name, n in self._split(split)["class_counts"].items()}

    def shard_paths(self, split: str) -> list[Path]:
        """Shard files of a split, checked to exist, be non-empty and match metadata.json (dfd.data.integrity).

        Every reader (the training pipeline, evaluate, export) lists shards here, so none of them
        trains on an incomplete conversion or trusts an edited count."""
        integrity.check_complete(self)
        info = self._split(split)
        if int(info["count"]) == 0:
            raise ValueError(f"split '{split}' of {self.directory} is empty")
        paths = [self.directory / shard["file"] for shard in info["shards"] if shard["count"] > 0]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"shards listed in {self.directory / METADATA_FILE} are missing: {missing[:3]}")
        integrity.check_split(self, split)   # incomplete conversion, sizes and counts (milliseconds)
        return paths
