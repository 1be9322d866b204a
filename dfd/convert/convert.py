"""The conversion behind tools/make_tfrecords.py: discover, split, plan, read, write, verify.

Memory stays flat whatever the dataset size: the item list (paths) is the only
thing proportional to it; frames live only while in flight, and at most
`MAX_CHUNKS_PER_WORKER` chunks per worker are in flight at any time.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from pathlib import Path

import dfd
from dfd.convert import records, sources, splits, worker, writer
from dfd.convert.records import RecordContent, SkippedFile
from dfd.data import metadata as metadata_lib
from dfd.data import schema
from dfd.data.preprocessing import PreprocessSpec

# Chosen from `python -m dfd.bench convert` (BENCHMARKS.md, Conversion):
# raw for clips (small frames: decoding JPEGs costs the input pipeline more than
# the extra bytes cost the disk), jpeg for images (keeps source JPEG bytes).
DEFAULT_ENCODING = {"video": "raw", "image": "jpeg"}
CHUNK_SIZE = 4
MAX_CHUNKS_PER_WORKER = 4
# Test hook: seconds to sleep after each finished shard, so a test can kill a run mid-way.
SLOW_SHARD_ENV = "DFD_CONVERT_SLOW_SHARD_S"


@dataclasses.dataclass
class ConvertConfig:
    output: str
    source: str | None = None
    manifest: str | None = None
    source_type: str = "auto"
    ffpp_splits: str | None = None
    ffpp_compression: str = "auto"      # c0/c23/c40/all; auto: the only level present
    kind: str | None = None             # None: from the files
    num_frames: int = 16
    frame_size: int = 64
    image_size: int = 256
    encoding: str | None = None         # None: DEFAULT_ENCODING[kind]
    jpeg_quality: int = 95
    sampling: str = "uniform"
    short_clips: str = "pad"
    face_crop: str = "none"             # "none" or "mtcnn" (dfd.data.faces)
    face_margin: float = 1.3
    face_detect_size: int = 320
    max_no_face_fraction: float = 0.5
    workers: int = 0                    # 0: all cores; 1: in this process
    shard_mb: float = 128.0
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_skip_fraction: float = 0.1
    overwrite: bool = False
    progress: bool = True


@dataclasses.dataclass
class ConvertSummary:
    counts: dict[str, int]
    skipped: int
    total: int
    bytes: int
    seconds: float
    output: Path
    resumed_shards: int = 0
    processed: int = 0   # files read in this run (fewer than total when resuming)

    def line(self) -> str:
        per_split = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        rate = self.processed / max(self.seconds, 1e-9)
        return (f"wrote {sum(self.counts.values())} examples ({per_split}) to {self.output}; "
                f"skipped {self.skipped} (see {metadata_lib.SKIPPED_FILE}); {self.bytes / 2**20:.1f} MiB; "
                f"{self.seconds:.1f} s; {rate:.1f} clips/s"
                + (f"; {self.resumed_shards} shards kept from an earlier run" if self.resumed_shards else ""))


class TooManySkipsError(ValueError):
    """The conversion finished, but skipped more files than allowed; `.summary` has the counts."""

    def __init__(self, message: str, summary: "ConvertSummary"):
        super().__init__(message)
        self.summary = summary


def build_spec(config: ConvertConfig, kind: str) -> PreprocessSpec:
    return PreprocessSpec(
        kind=kind,
        num_frames=config.num_frames if kind == "video" else 1,
        size=config.frame_size if kind == "video" else config.image_size,
        encoding=config.encoding or DEFAULT_ENCODING[kind],
        jpeg_quality=config.jpeg_quality,
        sampling=config.sampling,
        short_clips=config.short_clips,
        face_crop=config.face_crop,
        face_margin=config.face_margin,
        face_detect_size=config.face_detect_size,
        max_no_face_fraction=config.max_no_face_fraction,
    )


def estimated_record_bytes(spec: PreprocessSpec) -> int:
    raw = spec.num_frames * spec.size * spec.size * 3
    # JPEG at quality >= 90 of face crops is about a sixth of raw (BENCHMARKS.md).
    return 400 + (raw if spec.encoding == "raw" else spec.num_frames * 600 + raw // 6)


def _fingerprint(spec: PreprocessSpec, items: list[sources.Item], plans: list[writer.ShardPlan]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([dfd.__version__, spec.to_dict()], sort_keys=True).encode())
    for item in items:
        digest.update(f"{item.path}\0{item.label}\0{item.split}\0{item.group}\0{item.source}\n".encode())
    for plan in plans:
        digest.update(f"{plan.name}:{','.join(map(str, plan.positions))}\n".encode())
    return digest.hexdigest()


def _prepare_output(output: Path, fingerprint: str, overwrite: bool) -> writer.Progress:
    output.mkdir(parents=True, exist_ok=True)
    writer.remove_temporary_files(output)
    progress = writer.Progress.load(output)
    ours = {metadata_lib.METADATA_FILE, metadata_lib.SKIPPED_FILE, writer.PROGRESS_FILE}
    existing = [p for p in output.iterdir() if p.suffix == ".tfrecord" or p.name in ours]
    if progress is not None and progress.fingerprint == fingerprint:
        return progress
    if existing and not overwrite:
        raise ValueError(
            f"{output} already holds a different conversion (other files, options or dfd version); "
            "pass --overwrite to replace it or choose another --output")
    for path in existing:
        path.unlink()
    progress = writer.Progress(output, fingerprint)
    progress.save()  # before any shard: a final-named shard without this file is never ours to trust
    return progress


def _stream(items: list[sources.Item], positions: list[int], spec: PreprocessSpec, workers: int):
    """Yields (position, RecordContent | SkippedFile) in `positions` order, bounded in flight."""
    spec_dict = spec.to_dict()
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if main_file and not os.path.exists(main_file):
        # Workers re-import the main script (multiprocessing's spawn/forkserver); code run from
        # stdin or a deleted file would make every worker die at start and the pool respawn forever.
        workers = 1
    if workers <= 1:
        worker.init_worker()
        for position in positions:
            yield worker.read_chunk([(position, items[position].path)], spec_dict)[0]
        return
    chunks = [[(p, items[p].path) for p in positions[i:i + CHUNK_SIZE]] for i in range(0, len(positions), CHUNK_SIZE)]
    # forkserver, not fork: forking a process that has TensorFlow's threads running
    # can deadlock. Workers preload only the TF-free reading modules.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dfd.convert.worker"])
    with context.Pool(workers, initializer=worker.init_worker_process) as pool:
        pending: deque = deque()
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < workers * MAX_CHUNKS_PER_WORKER:
                pending.append(pool.apply_async(worker.read_chunk, (chunks[next_chunk], spec_dict)))
                next_chunk += 1
            yield from pending.popleft().get()


class _ProgressLine:
    """Conversion progress on stderr: files done, clips/s, skipped.

    On a terminal, one line redrawn in place (\\r) at most twice a second. In a log file (a cluster
    job's stderr), \\r would pile every update into one endless line, so there a full line is
    written every LOG_INTERVAL_S seconds instead, plus one at the end.
    """

    LOG_INTERVAL_S = 30.0

    def __init__(self, total: int, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.enabled = total, enabled
        self.terminal = enabled and self.stream.isatty()
        self.interval = 0.5 if self.terminal else self.LOG_INTERVAL_S
        self.done = self.skipped = 0
        self.start = self.last = time.monotonic()

    def update(self, skipped: bool) -> None:
        self.done += 1
        self.skipped += skipped
        now = time.monotonic()
        if self.enabled and (now - self.last > self.interval or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            line = f"converting {self.done}/{self.total} files  {rate:.1f} clips/s  skipped {self.skipped}"
            self.stream.write(f"\r{line}   " if self.terminal else f"{line}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.terminal and self.done:
            self.stream.write("\n")


def _features(spec: PreprocessSpec) -> dict:
    out = {}
    for key, feature in schema.full_features(spec.record_shape).items():
        out[key] = {"dtype": feature.dtype.name, "shape": list(feature.shape)}
    return out


def convert(config: ConvertConfig) -> ConvertSummary:
    """Converts a dataset; raises ValueError for bad options or too many skipped files."""
    start = time.monotonic()
    source_type, items = sources.discover(config.source, config.source_type, config.manifest, config.ffpp_splits,
                                           config.ffpp_compression)
    kind = config.kind or sources.detect_kind(items)
    spec = build_spec(config, kind)
    items = splits.assign_splits(items, config.val_fraction, config.test_fraction, config.seed)
    if config.shard_mb <= 0:
        raise ValueError(f"--shard_mb must be > 0, got {config.shard_mb}")
    records_per_shard = max(1, int(config.shard_mb * 2**20 // estimated_record_bytes(spec)))
    plans = writer.plan_shards([item.split for item in items], [item.label for item in items], config.seed,
                               records_per_shard)
    output = Path(config.output)
    progress = _prepare_output(output, _fingerprint(spec, items, plans), config.overwrite)

    todo = [plan for plan in plans if not progress.is_complete(plan.name)]
    workers = config.workers or os.cpu_count() or 1
    bar = _ProgressLine(sum(len(p.positions) for p in todo), config.progress)
    stream = _stream(items, [p for plan in todo for p in plan.positions], spec, workers)
    slow = float(os.environ.get(SLOW_SHARD_ENV, "0") or 0)
    try:
        for plan in todo:
            shard = writer.ShardWriter(output, plan.name)
            class_counts = {name: 0 for name in schema.LABEL_NAMES}
            skipped = []
            try:
                for expected in plan.positions:
                    position, result = next(stream)
                    if position != expected:
                        raise RuntimeError(f"results out of order: {position} != {expected}")
                    item = items[position]
                    if isinstance(result, RecordContent):
                        try:
                            shard.write(records.encode_content(result, spec, item.label, item.source, item.group))
                            class_counts[schema.LABEL_NAMES[item.label]] += 1
                        except ValueError as error:
                            result = SkippedFile(item.path, str(error))
                    if isinstance(result, SkippedFile):
                        skipped.append([item.source, result.reason])
                    bar.update(isinstance(result, SkippedFile))
            except BaseException:
                shard.abort()
                raise
            size = shard.close()
            progress.record(plan.name, {"split": plan.split, "count": shard.count, "bytes": size,
                                        "class_counts": class_counts, "skipped": skipped})
            if slow:
                time.sleep(slow)
    finally:
        stream.close()
        bar.finish()

    meta = _write_metadata(output, spec, plans, progress, source_type, config)
    from dfd.convert import verify  # after writing: verification re-reads what is on disk
    verify.verify_dataset(output)
    skipped_total = meta["skipped"]
    summary = ConvertSummary(counts={s: v["count"] for s, v in meta["splits"].items()}, skipped=skipped_total,
                             total=len(items), bytes=sum(sh["bytes"] for v in meta["splits"].values()
                                                         for sh in v["shards"]),
                             seconds=time.monotonic() - start, output=output,
                             resumed_shards=len(plans) - len(todo), processed=bar.done)
    if items and skipped_total / len(items) > config.max_skip_fraction:
        raise TooManySkipsError(
            f"{skipped_total} of {len(items)} files were skipped ({skipped_total / len(items):.0%}), more than "
            f"--max_skip_fraction={config.max_skip_fraction}: see {output / metadata_lib.SKIPPED_FILE}", summary)
    return summary


def _write_metadata(output: Path, spec: PreprocessSpec, plans, progress: writer.Progress,
                    source_type: str, config: ConvertConfig) -> dict:
    split_info: dict[str, dict] = {}
    skipped_rows = []
    for plan in plans:
        shard = progress.shards[plan.name]
        info = split_info.setdefault(plan.split, {"count": 0, "class_counts": {n: 0 for n in schema.LABEL_NAMES},
                                                  "shards": []})
        info["count"] += shard["count"]
        for name, n in shard["class_counts"].items():
            info["class_counts"][name] += n
        info["shards"].append({"file": plan.name, "count": shard["count"], "bytes": shard["bytes"]})
        skipped_rows.extend(shard["skipped"])
    with open(output / (metadata_lib.SKIPPED_FILE + writer.TMP_SUFFIX), "w", newline="") as handle:
        csv_writer = csv.writer(handle)
        csv_writer.writerow(["path", "reason"])
        csv_writer.writerows(sorted(skipped_rows))
    os.replace(output / (metadata_lib.SKIPPED_FILE + writer.TMP_SUFFIX), output / metadata_lib.SKIPPED_FILE)
    meta = {
        "schema_version": schema.SCHEMA_VERSION,
        "tool": "dfd.make_tfrecords",
        "tool_version": dfd.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"type": source_type, "path": str(Path(config.source).absolute()) if config.source else "",
                   "manifest": config.manifest or "", "ffpp_splits": config.ffpp_splits or "",
                   "ffpp_compression": config.ffpp_compression if source_type == "ffpp" else "",
                   "seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction},
        "preprocessing": spec.to_dict(),
        "features": _features(spec),
        "splits": split_info,
        "skipped": len(skipped_rows),
    }
    writer.atomic_write_text(output / metadata_lib.METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    return meta
