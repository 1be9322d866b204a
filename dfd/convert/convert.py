"""The conversion behind tools/make_tfrecords.py: discover, split, plan, read, write, verify.

Memory stays flat whatever the dataset size: the item list (paths) is the only
thing proportional to it; frames live only while in flight, and at most
`CHUNK_SIZE * MAX_CHUNKS_PER_WORKER` files per worker are in flight at any time.

What it touches: only `--output`, which must be empty, new, or a folder dfd wrote (its
metadata.json says "writer": "dfd", or a run's .progress.json is there), and never inside or
equal to `--source`. In it, only dfd's own names are written, replaced or deleted (shards,
their `.tmp` files, metadata.json, skipped.csv, .progress.json, .dfd.lock); the folder is
locked (dfd.locks) for the whole run. Other files there are left alone.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import dfd
from dfd import atomic_files, folders, locks
from dfd.convert import pool, sources, splits, worker, writer
from dfd.convert.config import ConvertConfig
from dfd.data import metadata as metadata_lib
from dfd.data import schema
from dfd.data.preprocessing import PreprocessSpec
from dfd.preprocess import records
from dfd.preprocess.records import RecordContent, SkippedFile

# Chosen from `python -m dfd.bench convert` (BENCHMARKS.md, Conversion):
# raw for clips (small frames: decoding JPEGs costs the input pipeline more than
# the extra bytes cost the disk), jpeg for images (keeps source JPEG bytes).
DEFAULT_ENCODING = {"video": "raw", "image": "jpeg"}
CHUNK_SIZE = 4
MAX_CHUNKS_PER_WORKER = 4


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
        # surrogateescape: a file name that is not UTF-8 reaches here as the bytes it is.
        digest.update(f"{item.path}\0{item.label}\0{item.split}\0{item.group}\0{item.source}\n"
                      .encode("utf-8", "surrogateescape"))
    for plan in plans:
        digest.update(f"{plan.name}:{','.join(map(str, plan.positions))}\n".encode())
    return digest.hexdigest()


def _is_dfd_folder(output: Path) -> bool:
    """Did dfd write this folder? Its metadata.json says so, or a conversion's .progress.json is there."""
    try:
        meta = json.loads((output / metadata_lib.METADATA_FILE).read_text())
        # "tool" marks datasets written before the "writer" key existed.
        if isinstance(meta, dict) and (meta.get("writer") == metadata_lib.WRITER
                                       or meta.get("tool") == "dfd.make_tfrecords"):
            return True
    except (OSError, ValueError):
        pass
    try:
        progress = writer.Progress.load(output)
    except writer.DamagedProgressError:   # dfd's name: reported by _prepare_output, replaced by --overwrite
        return True
    return progress is not None and bool(progress.fingerprint)


def check_output(output: Path, source: str | None) -> None:
    """Refuses an --output that is the source, lies inside it, or is a folder of someone else's files."""
    if source:
        resolved, root = output.resolve(), Path(source).resolve()
        if resolved == root or root in resolved.parents:
            raise ValueError(f"--output={output} is {'the' if resolved == root else 'inside the'} --source folder "
                             f"{source}: the dataset would be written among (and later read as) its own source files. "
                             "Choose an --output outside the source")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output={output} is a file, not a folder")
    folders.check_writable(output, "--output")   # before the source is walked and read
    if output.is_dir() and not _is_dfd_folder(output):
        foreign = sorted(p.name for p in output.iterdir() if p.name != locks.LOCK_FILE)
        if foreign:
            raise ValueError(f"--output={output} is not empty and is not a dfd dataset (it holds "
                             f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); dfd writes only into a "
                             "new or empty folder or one it wrote. Choose another --output")


def _prepare_output(output: Path, fingerprint: str, overwrite: bool) -> writer.Progress:
    """Called under the output's lock, after check_output: the folder is new, empty or dfd's own."""
    output.mkdir(parents=True, exist_ok=True)
    writer.remove_temporary_files(output)
    try:
        progress = writer.Progress.load(output)
    except writer.DamagedProgressError:
        if not overwrite:
            raise
        progress = None   # --overwrite: removed below with dfd's other files
    existing = writer.own_files(output)
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


def _stream(items: list[sources.Item], positions: list[int], spec: PreprocessSpec, workers: int,
            max_frame_pixels: int, on_send: Callable | None = None):
    """Yields (position, RecordContent | SkippedFile) in `positions` order, bounded in flight."""
    spec_dict = spec.to_dict()
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if main_file and not os.path.exists(main_file):
        # Workers re-import the main script (multiprocessing's spawn/forkserver); code run from
        # stdin or a deleted file would make every worker die at start.
        workers = 1
    if workers <= 1:
        worker.init_worker()
        for position in positions:
            yield worker.read_chunk([(position, items[position].path)], spec_dict, max_frame_pixels)[0]
        return
    yield from pool.read_in_order([(p, items[p].path) for p in positions], spec_dict, workers,
                                  window=workers * CHUNK_SIZE * MAX_CHUNKS_PER_WORKER, on_send=on_send,
                                  max_frame_pixels=max_frame_pixels)


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


def _dataset_warnings(items: list[sources.Item]) -> list[str]:
    warnings = []
    labels = {item.label for item in items}
    if len(labels) == 1:
        warnings.append(f"the source holds only {schema.LABEL_NAMES[labels.pop()]} files: a detector needs both "
                        "real and fake examples to learn anything")
    return warnings + splits.cross_split_duplicates(items)


def _disk_full(error: Exception) -> bool:
    import tensorflow as tf  # the writing process has it loaded already

    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    # TensorFlow's file writers report ENOSPC as RESOURCE_EXHAUSTED.
    return isinstance(error, tf.errors.ResourceExhaustedError) or "No space left" in str(error)


def convert(config: ConvertConfig, on_send: Callable[[int, int, str], None] | None = None,
            on_shard: Callable[[str], None] | None = None) -> ConvertSummary:
    """Converts a dataset; raises ValueError for bad options, a full disk or too many skipped files.

    on_send: passed to dfd.convert.pool (called as each file goes to a worker process); tests use it.
    on_shard: called with a shard's name once it is complete and recorded (--engine=local); a test
    slows the run down with it, to kill it mid-way.
    """
    start = time.monotonic()
    output = Path(config.output)
    check_output(output, config.source)
    findings = sources.Findings()
    source_type, items = sources.discover(config.source, config.source_type, config.manifest, config.ffpp_splits,
                                           config.ffpp_compression, findings)
    kind = config.kind or sources.detect_kind(items)
    spec = build_spec(config, kind)
    items = splits.assign_splits(items, config.val_fraction, config.test_fraction, config.seed)
    warnings = findings.warnings + _dataset_warnings(items)
    for warning in warnings:
        print(f"make_tfrecords: warning: {warning}", file=sys.stderr)
    if config.shard_mb <= 0:
        raise ValueError(f"--shard_mb must be > 0, got {config.shard_mb}")
    if config.max_frame_pixels < 1:
        raise ValueError(f"--max_frame_pixels must be >= 1, got {config.max_frame_pixels}")
    records_per_shard = max(1, int(config.shard_mb * 2**20 // estimated_record_bytes(spec)))
    plans = writer.plan_shards([item.split for item in items], [item.label for item in items], config.seed,
                               records_per_shard)
    with locks.folder_lock(output, "conversion"):
        try:
            progress = _prepare_output(output, _fingerprint(spec, items, plans), config.overwrite)
            todo = _recheck_kept_shards(output, plans, progress)
            if config.engine == "beam":   # the same plans, items and per-file code, run as a Beam pipeline
                try:
                    from dfd.convert import beam_engine
                except ImportError:
                    raise ValueError("--engine=beam needs Apache Beam: pip install 'dfd[beam]' "
                                     "(apache-beam and google-crc32c)") from None
                # Shards Beam workers finished before an interruption (their completion notes) are kept.
                todo = beam_engine.adopt_finished_shards(output, todo, progress)
                processed = beam_engine.write_shards(output, items, spec, todo, progress, config)
            elif config.engine == "local":
                processed = _write_shards(output, items, spec, todo, progress, config, on_send, on_shard).done
            else:
                raise ValueError(f"--engine must be local or beam, got {config.engine!r}")
            total = len(items) + len(findings.skipped)
            skipped_total = len(findings.skipped) + sum(len(progress.shards[p.name]["skipped"]) for p in plans)
            incomplete = None
            if total and skipped_total / total > config.max_skip_fraction:
                incomplete = (f"{skipped_total} of {total} files were skipped ({skipped_total / total:.0%}), "
                              f"more than --max_skip_fraction={config.max_skip_fraction}: "
                              f"see {output / metadata_lib.SKIPPED_FILE}")
            meta = _write_metadata(output, spec, plans, progress, source_type, config, findings, warnings, incomplete)
        except Exception as error:
            if _disk_full(error):
                where = getattr(error, "filename", None) or output
                raise ValueError(f"the disk is full writing {where}: free space there and re-run the same command; "
                                 "it resumes from the shards already complete") from None
            raise
        from dfd.convert import verify  # after writing: verification re-reads what is on disk
        verify.verify_dataset(output)
    summary = ConvertSummary(counts={s: v["count"] for s, v in meta["splits"].items()}, skipped=skipped_total,
                             total=total, bytes=sum(sh["bytes"] for v in meta["splits"].values()
                                                    for sh in v["shards"]),
                             seconds=time.monotonic() - start, output=output,
                             resumed_shards=len(plans) - len(todo), processed=processed)
    if incomplete:
        raise TooManySkipsError(incomplete + "; the dataset is marked incomplete and training refuses it", summary)
    return summary


def _recheck_kept_shards(output: Path, plans, progress: writer.Progress) -> list[writer.ShardPlan]:
    """The plans still to write. A shard kept from an earlier run is re-read first (CRC-checked):
    one damaged since (bit rot, a bad copy) is written again, so re-running the command repairs it.
    Costs one read of the kept shards, only when resuming."""
    from dfd.convert import verify

    todo = []
    for plan in plans:
        path = output / plan.name
        if progress.is_complete(plan.name):
            try:
                if verify.count_shard(path)[0] == progress.shards[plan.name]["count"]:
                    continue
            except verify.VerificationError:
                pass
            print(f"make_tfrecords: {path} is damaged: writing it again", file=sys.stderr)
            path.unlink()
        todo.append(plan)
    return todo


def encode_or_skip(result: RecordContent | SkippedFile, item: sources.Item, spec) -> bytes | SkippedFile:
    """A worker's reading of `item` to its serialized record, or the SkippedFile saying why not.
    Both engines (local and beam) turn each file into a record through this function."""
    if isinstance(result, SkippedFile):
        return result
    try:
        return records.encode_content(result, spec, item.label, item.source, item.group)
    except ValueError as error:
        return SkippedFile(item.path, str(error))


def skipped_row(item: sources.Item, skipped: SkippedFile) -> list[str]:
    """The skipped.csv row of a skipped file: its path as the source names it, and why."""
    return [item.source, skipped.reason]


def _write_shards(output: Path, items, spec, todo, progress: writer.Progress, config: ConvertConfig,
                  on_send, on_shard=None) -> _ProgressLine:
    workers = config.workers or os.cpu_count() or 1
    bar = _ProgressLine(sum(len(p.positions) for p in todo), config.progress)
    stream = _stream(items, [p for plan in todo for p in plan.positions], spec, workers, config.max_frame_pixels,
                     on_send)
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
                    record = encode_or_skip(result, item, spec)
                    if isinstance(record, SkippedFile):
                        skipped.append(skipped_row(item, record))
                    else:
                        shard.write(record)
                        class_counts[schema.LABEL_NAMES[item.label]] += 1
                    bar.update(isinstance(record, SkippedFile))
            except BaseException:
                shard.abort()
                raise
            size = shard.close()
            progress.record(plan.name, {"split": plan.split, "count": shard.count, "bytes": size,
                                        "class_counts": class_counts, "skipped": skipped})
            if on_shard is not None:
                on_shard(plan.name)
    finally:
        stream.close()
        bar.finish()
    return bar


def _write_metadata(output: Path, spec: PreprocessSpec, plans, progress: writer.Progress,
                    source_type: str, config: ConvertConfig, findings: sources.Findings, warnings: list[str],
                    incomplete: str | None) -> dict:
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
    skipped_rows.extend([list(row) for row in findings.skipped])
    failed_files = len(skipped_rows)   # metadata.json's "skipped": failed files, not findings.unused
    skipped_rows.extend([list(row) for row in findings.unused])
    table = io.StringIO(newline="")
    csv_writer = csv.writer(table)
    csv_writer.writerow(["path", "reason"])
    csv_writer.writerows(sorted(skipped_rows))
    # surrogateescape: a file name that is not UTF-8 is written back as its own bytes.
    atomic_files.write_text(output / metadata_lib.SKIPPED_FILE, table.getvalue(), errors="surrogateescape")
    source = {"type": source_type, "path": str(Path(config.source).absolute()) if config.source else "",
              "manifest": config.manifest or "", "ffpp_splits": config.ffpp_splits or "",
              "ffpp_compression": config.ffpp_compression if source_type == "ffpp" else "",
              "seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction}
    meta = metadata_lib.write_metadata(output, tool="dfd.make_tfrecords", source=source, preprocessing=spec,
                                       splits=split_info, skipped=failed_files, features=_features(spec),
                                       warnings=warnings, incomplete=incomplete)
    return meta
