"""`make_tfrecords --engine=beam`: the conversion's shard writing as an Apache Beam pipeline.

Everything else is the local engine's (dfd.convert.convert): discovery, splits, the shard plans,
the output checks and lock, .progress.json, metadata.json, skipped.csv and verification all run
in the launching process exactly as for --engine=local. Only the work of `_write_shards` moves:

    Create(files of the shards still to write)      one element per file: (shard, rank, item)
    | Reshuffle                                     spread the files over the runner's workers
    | ReadAndEncode                                 records.try_read_content + convert.encode_or_skip,
                                                    the per-file code both engines share
    | GroupByKey(shard)                             one shard's records on one worker
    | WriteShard                                    in plan order through writer.ShardWriter
                                                    (<name>.tmp, then rename), then a completion note

Records are written in the plan's order, so a shard is byte-for-byte the shard the local engine
writes (tests/test_convert_beam.py compares them).

Why a re-run is safe (Beam's semantics): a runner may execute a bundle more than once (a worker
lost, a failed bundle retried), and a pipeline can die half way. Every step before WriteShard is
a pure function of its input, and WriteShard is idempotent: the shard's content is fixed by the
plan, it becomes visible only by an atomic rename of a complete file, and the completion note
`.<shard>.done.json` (the shard's counts, bytes and skipped rows, with the conversion's
fingerprint) is written after the rename, also atomically. The launching process is the only
writer of .progress.json: after the pipeline (or, on a re-run, before starting one) it folds in
every note whose fingerprint and shard size match, and deletes the notes. So an interrupted run
re-run with the same command keeps the shards finished before the interruption, runs a pipeline
for the rest only, and a re-run over a finished output starts no pipeline at all. Either engine
can finish a conversion the other began (the fingerprint does not include the engine).

The output folder must be one filesystem that the launching process and every Beam worker see
(local disk for the DirectRunner; NFS, Lustre or a mounted bucket on a cluster): the lock, the
rename and the notes are file operations. Native gs:// or s3:// output is not supported.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import apache_beam as beam  # optional (dfd[beam]): dfd.convert.convert imports this module only for --engine=beam
from apache_beam.options.pipeline_options import PipelineOptions

from dfd.atomic_files import write_json
from dfd.convert import verify, writer
from dfd.data import schema
from dfd.preprocess import records
from dfd.preprocess.records import SkippedFile

DONE_SUFFIX = ".done.json"


def note_path(output: Path, shard: str) -> Path:
    """The completion note of `shard`: hidden, and one of dfd's own names (writer.is_own_name)."""
    return Path(output) / f".{shard}{DONE_SUFFIX}"


def adopt_finished_shards(output: Path, plans, progress: writer.Progress) -> list:
    """Folds Beam workers' completion notes into .progress.json; returns the plans still to write.

    A note counts only with this conversion's fingerprint and a shard of the noted size and record
    count (a shard damaged or replaced since is written again). Every note is deleted afterwards.
    """
    todo = []
    for plan in plans:
        note = note_path(output, plan.name)
        adopted = False
        try:
            saved = json.loads(note.read_text())
            info = saved["info"]
            shard = Path(output) / plan.name
            adopted = (saved.get("fingerprint") == progress.fingerprint and shard.is_file()
                       and shard.stat().st_size == info["bytes"] and verify.count_shard(shard)[0] == info["count"])
        except (OSError, ValueError, KeyError, verify.VerificationError):
            pass
        if adopted:
            progress.record(plan.name, info)
        else:
            todo.append(plan)
        note.unlink(missing_ok=True)
    return todo


def write_shards(output: Path, items, spec, todo, progress: writer.Progress, config) -> int:
    """Writes the shards of `todo` with a Beam pipeline run with config.beam_options; returns the
    number of files read. Blocks until the pipeline is done (also on remote runners). Call
    adopt_finished_shards first: `todo` should hold only the shards nobody finished."""
    if not todo:
        return 0
    files = [(plan.name, rank, items[position]) for plan in todo for rank, position in enumerate(plan.positions)]
    splits = {plan.name: plan.split for plan in todo}
    options = PipelineOptions(shlex.split(config.beam_options or "--runner=DirectRunner"))
    start = time.monotonic()
    print(f"make_tfrecords: beam: {len(files)} files into {len(todo)} shards ({config.beam_options or 'DirectRunner'})",
          file=sys.stderr)
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "Files" >> beam.Create(files)
             # Create hands its elements out in a few large bundles; without the reshuffle one
             # worker would read most files (fusion), whatever --direct_num_workers says.
             | "Reshuffle" >> beam.Reshuffle()
             | "ReadAndEncode" >> beam.ParDo(_ReadAndEncode(spec, config.max_frame_pixels))
             | "ByShard" >> beam.GroupByKey()
             | "WriteShard" >> beam.ParDo(_WriteShard(str(output), splits, progress.fingerprint)))
    left = adopt_finished_shards(output, todo, progress)
    if left:
        raise RuntimeError(f"the Beam pipeline finished but {len(left)} shards have no completion note "
                           f"({left[0].name}, ...): is --output on a filesystem every Beam worker writes to? "
                           "Re-run the same command to write them")
    print(f"make_tfrecords: beam: {len(files)} files in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return len(files)


class _ReadAndEncode(beam.DoFn):
    """(shard, rank, item) -> (shard, (rank, record bytes | None, skipped row | None, label))."""

    def __init__(self, spec, max_frame_pixels: int):
        self.spec, self.max_frame_pixels = spec, max_frame_pixels

    def setup(self):
        from dfd.convert import worker
        # One OpenCV and face-detection thread per worker, as in the local pool: the runner
        # already runs one worker per core.
        worker.init_worker_process()

    def process(self, element):
        from dfd.convert import convert
        shard, rank, item = element
        content = records.try_read_content(item.path, self.spec, self.max_frame_pixels)
        record = convert.encode_or_skip(content, item, self.spec)
        if isinstance(record, SkippedFile):
            yield shard, (rank, None, convert.skipped_row(item, record), item.label)
        else:
            yield shard, (rank, record, None, item.label)


class _WriteShard(beam.DoFn):
    """(shard, [(rank, record, skipped, label)]) -> the shard file and its completion note."""

    def __init__(self, output: str, splits: dict, fingerprint: str):
        self.output, self.splits, self.fingerprint = output, splits, fingerprint

    def process(self, element):
        shard, entries = element
        output = Path(self.output)
        entries = sorted(entries, key=lambda entry: entry[0])   # the plan's order
        class_counts = {name: 0 for name in schema.LABEL_NAMES}
        skipped = []
        shard_writer = writer.ShardWriter(output, shard)
        try:
            for _, record, skipped_row, label in entries:
                if record is None:
                    skipped.append(skipped_row)
                else:
                    shard_writer.write(record)
                    class_counts[schema.LABEL_NAMES[label]] += 1
        except BaseException:
            shard_writer.abort()
            raise
        size = shard_writer.close()
        info = {"split": self.splits[shard], "count": shard_writer.count, "bytes": size,
                "class_counts": class_counts, "skipped": skipped}
        write_json(note_path(output, shard), {"fingerprint": self.fingerprint, "info": info}, indent=None)
        yield shard
