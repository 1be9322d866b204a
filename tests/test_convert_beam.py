"""--engine=beam (Beam DirectRunner, two worker processes) writes what --engine=local writes, and resumes."""

import json
import os
from pathlib import Path

import tensorflow as tf

from dfd.convert import beam_engine
from dfd.convert import convert as convert_lib
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.testing.synthetic import write_video_folder

ROOT = Path(__file__).resolve().parents[1]
# 6 x 16 x 16 x 3 raw records (4.6 kB): 0.012 MiB shards hold 2 records, so each split has several shards.
SMALL = dict(num_frames=6, frame_size=16, shard_mb=0.012, progress=False)
BEAM = "--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing"


def _decoded(directory: Path) -> dict:
    """{split: {source key: (label, frames bytes)}} decoded from the shards metadata.json lists."""
    meta = DatasetMetadata.load(directory)
    out = {}
    for split in meta.splits:
        for path in meta.shard_paths(split):
            for record in tf.data.TFRecordDataset(str(path)):
                parsed = schema.parse_example_numpy(record.numpy(), meta.preprocessing.record_shape)
                out.setdefault(split, {})[parsed[schema.SOURCE]] = (int(parsed[schema.LABEL]),
                                                                     parsed[schema.FRAMES].tobytes())
    return out


def _counts(directory: Path) -> dict:
    meta = json.loads((directory / "metadata.json").read_text())
    return {split: (info["count"], info["class_counts"], [s["count"] for s in info["shards"]])
            for split, info in meta["splits"].items()} | {"skipped": meta["skipped"], "writer": meta["writer"]}


def test_beam_direct_runner_writes_the_local_engines_records_and_resumes(tmp_path, monkeypatch):
    # The DirectRunner's worker processes import dfd from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    videos = write_video_folder(tmp_path / "videos", {"train": 4, "validation": 2, "Test": 1},
                                num_frames=8, height=24, width=32)
    (videos / "train" / "fake" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (videos / "train" / "real" / "empty.mp4").write_bytes(b"")
    config = dict(source=str(videos), workers=1, max_skip_fraction=0.5, **SMALL)

    local = convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "local"), **config))
    beam_out = tmp_path / "beam"
    beam = convert_lib.convert(convert_lib.ConvertConfig(output=str(beam_out), engine="beam", beam_options=BEAM,
                                                         **config))

    assert beam.counts == local.counts and beam.skipped == local.skipped == 2
    assert _counts(beam_out) == _counts(tmp_path / "local") and _counts(beam_out)["writer"] == "dfd"
    decoded = _decoded(beam_out)
    assert decoded == _decoded(tmp_path / "local") and sum(len(v) for v in decoded.values()) == 14
    # The shards are byte-for-byte the local engine's: the same records in the same order.
    for shard in sorted(beam_out.glob("*.tfrecord")):
        assert shard.read_bytes() == (tmp_path / "local" / shard.name).read_bytes(), shard.name
    rows = (beam_out / "skipped.csv").read_text().splitlines()
    assert rows == (tmp_path / "local" / "skipped.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["train/fake/broken.mp4", "train/real/empty.mp4"]
    assert not list(beam_out.glob(".*.done.json")) and not list(beam_out.glob("*.tmp"))

    # Re-run over the finished output: no pipeline, nothing re-read, the same shards.
    before = {p.name: p.stat().st_mtime_ns for p in beam_out.glob("*.tfrecord")}
    again = convert_lib.convert(convert_lib.ConvertConfig(output=str(beam_out), engine="beam",
                                                          beam_options="--runner=NoSuchRunner", **config))
    assert again.processed == 0 and again.resumed_shards == len(before)
    assert {p.name: p.stat().st_mtime_ns for p in beam_out.glob("*.tfrecord")} == before

    # An interrupted run: Beam workers had finished two shards (notes written), the launcher died
    # before folding them in. The re-run adopts those two and writes only the rest.
    progress = json.loads((beam_out / ".progress.json").read_text())
    names = sorted(progress["shards"])
    for name in names[:2]:
        beam_engine.note_path(beam_out, name).write_text(json.dumps(
            {"fingerprint": progress["fingerprint"], "info": progress["shards"][name]}))
    for name in names[2:]:
        (beam_out / name).unlink()
    progress["shards"] = {}
    (beam_out / ".progress.json").write_text(json.dumps(progress))
    # In-process DirectRunner: spawning worker processes (each importing TensorFlow) is the slow
    # part of Beam's start-up, and the equivalence of the engines is checked above.
    resumed = convert_lib.convert(convert_lib.ConvertConfig(output=str(beam_out), engine="beam",
                                                            beam_options="--runner=DirectRunner", **config))
    assert resumed.resumed_shards == 2 and resumed.processed == 16 - progress_count(beam_out, names[:2])
    assert _decoded(beam_out) == decoded and _counts(beam_out) == _counts(tmp_path / "local")


def progress_count(directory: Path, names) -> int:
    """Files (records and skipped) the shards `names` stand for."""
    shards = json.loads((directory / ".progress.json").read_text())["shards"]
    return sum(shards[name]["count"] + len(shards[name]["skipped"]) for name in names)
