"""End-to-end conversions: metadata vs shards, resume, interruption, verification, skips."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from dfd import cli
from dfd.convert import convert as convert_lib
from dfd.convert import verify
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.testing.synthetic import moving_clip, write_video_folder

ROOT = Path(__file__).resolve().parents[1]
TOOL = [sys.executable, str(ROOT / "tools" / "make_tfrecords.py")]
# Each record is 6 x 16 x 16 x 3 = 4.6 kB raw: 0.012 MiB shards hold 2 records.
SMALL = dict(num_frames=6, frame_size=16, shard_mb=0.012, progress=False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = write_video_folder(tmp_path_factory.mktemp("videos"), {"train": 6, "validation": 2, "Test": 2},
                              num_frames=10, height=24, width=32)
    (root / "train" / "real" / "notes.txt").write_text("not a video")
    (root / "train" / "fake" / "empty.mp4").write_bytes(b"")
    return root


def read_shard(path):
    return [record.numpy() for record in tf.data.TFRecordDataset(str(path))]


def shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).glob("*.tfrecord"))}


def test_metadata_counts_match_shards_and_shards_mix_classes(videos, tmp_path):
    output = tmp_path / "out"
    summary = convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(videos), workers=1,
                                                            **SMALL))
    assert summary.counts == {"train": 12, "val": 4, "test": 4} and summary.skipped == 2
    meta = DatasetMetadata.load(output)
    spec = meta.preprocessing
    assert (spec.kind, spec.num_frames, spec.size, spec.encoding) == ("video", 6, 16, "raw")
    assert meta.raw["features"]["frame_indices"] == {"dtype": "int64", "shape": [6]}
    assert meta.raw["source"]["type"] == "folder" and meta.raw["skipped"] == 2
    for split in ("train", "val", "test"):
        labels = []
        for shard in meta.raw["splits"][split]["shards"]:
            records = read_shard(output / shard["file"])
            assert len(records) == shard["count"]
            shard_labels = [schema.parse_example_numpy(r, spec.record_shape)["label"] for r in records]
            if len(records) == 2:  # one of the two files may have been a skipped bad one
                assert sorted(shard_labels) == [0, 1], "a shard should hold both classes"
            labels += shard_labels
        assert meta.class_counts(split) == {"real": labels.count(0), "fake": labels.count(1)}
    rows = (output / "skipped.csv").read_text().splitlines()
    assert rows == ["path,reason", "train/fake/empty.mp4,empty file (0 bytes)",
                    "train/real/notes.txt,not an image or video file (unrecognised content)"]
    assert not list(output.glob("*.tmp"))

    # The same command again keeps every shard and changes nothing.
    before = shard_bytes(output)
    again = convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(videos), workers=1, **SMALL))
    assert again.resumed_shards == 11 and shard_bytes(output) == before
    # Different options into the same folder are refused rather than mixed.
    with pytest.raises(ValueError, match="--overwrite"):
        convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(videos), workers=1,
                                                      **{**SMALL, "frame_size": 24}))


def test_worker_processes_write_the_same_shards(videos, tmp_path):
    config = dict(source=str(videos), **SMALL)
    convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "one"), workers=1, **config))
    convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "two"), workers=2, **config))
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    assert (tmp_path / "one" / "skipped.csv").read_text() == (tmp_path / "two" / "skipped.csv").read_text()


def test_images_keep_source_jpeg_bytes_by_default(tmp_path):
    for split in ("train", "val"):
        for label in ("real", "fake"):
            for i in range(2):
                folder = tmp_path / "src" / split / label
                folder.mkdir(parents=True, exist_ok=True)
                size = 32 if i == 0 else 40
                cv2.imwrite(str(folder / f"{i}.jpg"), cv2.resize(moving_clip(i, 1, 32, 32)[0], (size, size)))
    convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "out"), source=str(tmp_path / "src"),
                                                  image_size=32, workers=1, progress=False))
    meta = DatasetMetadata.load(tmp_path / "out")
    assert meta.preprocessing.encoding == "jpeg" and meta.preprocessing.kind == "image"
    kept = 0
    for path in meta.shard_paths("train") + meta.shard_paths("val"):
        for record in read_shard(path):
            example = tf.train.Example.FromString(record)
            source = example.features.feature[schema.SOURCE].bytes_list.value[0].decode()
            frame = example.features.feature[schema.FRAMES].bytes_list.value[0]
            kept += frame == (tmp_path / "src" / source).read_bytes()
    assert kept == 4  # the 32x32 sources, not the 40x40 ones


def run_tool(args, env=None, **kwargs):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen(TOOL + args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


# The conversion of SMALL, slowed down 0.4 s after each shard through convert's on_shard hook, so it can be killed
# mid-way: argv output, source.
SLOW_CONVERSION = """
import sys, time
from dfd.convert import convert as convert_lib
config = convert_lib.ConvertConfig(output=sys.argv[1], source=sys.argv[2], workers=1, **%r)
convert_lib.convert(config, on_shard=lambda name: time.sleep(0.4))
""" % SMALL


def test_killed_run_resumes_to_the_same_shards(videos, tmp_path):
    args = [f"--source={videos}", "--frames=6", "--frame_size=16", "--shard_mb=0.012", "--workers=1",
            "--noprogress"]
    clean = tmp_path / "clean"
    convert_lib.convert(convert_lib.ConvertConfig(output=str(clean), source=str(videos), workers=1, **SMALL))

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SLOW_CONVERSION, str(killed), str(videos)],
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    progress = killed / ".progress.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if progress.is_file() and len(json.loads(progress.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    written = json.loads(progress.read_text())["shards"]
    assert 3 <= len(written) < 11, "the run should have been killed mid-way"
    assert not (killed / "metadata.json").exists()
    for path in killed.glob("*.tfrecord"):  # nothing under a final name is incomplete (CRC-checked read)
        records = read_shard(path)
        # (A kill between the rename and the progress update leaves a complete, unlisted shard.)
        assert len(records) == written.get(path.name, {"count": len(records)})["count"] >= 1

    resumed = run_tool(args + [f"--output={killed}"])
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "shards kept from an earlier run" in stdout
    assert shard_bytes(killed) == shard_bytes(clean)
    clean_meta, resumed_meta = (json.loads((d / "metadata.json").read_text()) for d in (clean, killed))
    assert clean_meta["splits"] == resumed_meta["splits"]
    assert (clean / "skipped.csv").read_text() == (killed / "skipped.csv").read_text()


def test_too_many_skips_is_a_failure_with_a_summary(tmp_path):
    for split in ("train", "test"):
        for label in ("real", "fake"):
            folder = tmp_path / "src" / split / label
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / "ok.png"), np.full((20, 20, 3), 9, np.uint8))
            (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    process = run_tool([f"--source={tmp_path / 'src'}", f"--output={tmp_path / 'out'}", "--workers=1",
                        "--image_size=16", "--max_skip_fraction=0.25"])
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == cli.USER_ERROR_EXIT
    assert "skipped 4" in stdout and "more than --max_skip_fraction=0.25" in stderr
    assert len((tmp_path / "out" / "skipped.csv").read_text().splitlines()) == 5


def test_verification_catches_corrupt_and_truncated_shards(videos, tmp_path):
    output = tmp_path / "out"
    convert_lib.convert(convert_lib.ConvertConfig(output=str(output), source=str(videos), workers=1, **SMALL))
    assert verify.verify_dataset(output) == {"train": 12, "val": 4, "test": 4}
    shard = output / "train-00001-of-00007.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only the CRC can tell
    shard.write_bytes(bytes(data))
    with pytest.raises(verify.VerificationError, match="train-00001-of-00007.tfrecord is corrupt"):
        verify.verify_dataset(output)
    shard.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(verify.VerificationError, match="train-00001-of-00007.tfrecord has"):
        verify.verify_dataset(output)
    with pytest.raises(verify.VerificationError, match="corrupt"):
        verify.count_shard(shard)


def test_worker_side_reading_does_not_import_tensorflow(videos):
    # Workers that import TensorFlow pay seconds and hundreds of MB each before decoding anything.
    code = ("import sys; from dfd.convert import worker;"
            "spec = dict(kind='video', num_frames=4, size=16, encoding='raw', jpeg_quality=95,"
            "sampling='uniform', short_clips='pad', face_crop='none');"
            f"result = worker.read_chunk([(0, {str(next(videos.rglob('*.mp4')))!r})], spec);"
            "print(result[0][1].frames.shape, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "(4, 16, 16, 3) False"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_redrawn_on_a_terminal_and_whole_lines_in_a_log():
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        line = convert_lib._ProgressLine(total=3, enabled=True, stream=stream)
        for skipped in (False, True, False):
            line.update(skipped)
        line.finish()
    # A log gets no carriage returns: just the final count (updates in between are 30 s apart).
    assert log.getvalue() == log.getvalue().replace("\r", "")
    assert log.getvalue().splitlines()[-1].startswith("converting 3/3 files") and "skipped 1" in log.getvalue()
    assert terminal.getvalue().startswith("\r") and terminal.getvalue().endswith("\n")
    quiet = io.StringIO()
    line = convert_lib._ProgressLine(total=1, enabled=False, stream=quiet)
    line.update(False)
    line.finish()
    assert quiet.getvalue() == ""
