"""Hostile and careless inputs to the converter and its readers (issue 13): nothing lost, nothing mislabelled.

Each test builds one case on a few tiny real mp4/PNG files and checks the outcome: exit code or
error message, skipped.csv rows, files left untouched, labels intact.
"""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest
import tensorflow as tf

from dfd import cli, locks
from dfd.convert import convert as convert_lib
from dfd.convert import sources, verify, writer
from dfd.data import integrity, pipeline, schema
from dfd.data.metadata import DatasetMetadata
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import evaluate, loading, predict
from dfd.testing.fake_shards import write_fake_dataset
from dfd.testing.runs import untrained_image_run
from dfd.testing.synthetic import moving_clip, write_mp4, write_video_folder

ROOT = Path(__file__).resolve().parents[1]
# 4 x 16 x 16 x 3 = 3 kB raw records: 0.012 MiB shards hold 4 of them.
SMALL = dict(num_frames=4, frame_size=16, shard_mb=0.012, progress=False, workers=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """train: 3 real + 3 fake, val: 1 + 1, as clipNNNNN.mp4 (8 frames of 24x32)."""
    return write_video_folder(tmp_path_factory.mktemp("videos"), {"train": 3, "val": 1}, num_frames=8,
                              height=24, width=32)


def run_convert(source, output, on_send=None, **options):
    config = convert_lib.ConvertConfig(output=str(output), source=str(source) if source else None,
                                       **{**SMALL, **options})
    return convert_lib.convert(config, on_send=on_send)


def records_of(output) -> dict[bytes, int]:
    """{stored source bytes: label} of every record in a converted folder."""
    found = {}
    for path in sorted(Path(output).glob("*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            found[feature[schema.SOURCE].bytes_list.value[0]] = feature[schema.LABEL].int64_list.value[0]
    return found


def skipped_rows(output) -> list[list[str]]:
    with open(Path(output) / "skipped.csv", newline="", errors="surrogateescape") as handle:
        return list(csv.reader(handle))[1:]


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def write_png(path, seed, size=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.resize(moving_clip(seed, 1, 24, 24)[0], (size, size)))


# ---------------------------------------------------------------------------------------------
# 1. Labels and data are never silently wrong
# ---------------------------------------------------------------------------------------------

def test_symlinks_neither_loop_nor_relabel_and_each_file_is_read_once(videos, tmp_path):
    source = tmp_path / "L"
    shutil.copytree(videos, source)
    (source / "train" / "real" / "loop").symlink_to("..")                 # back up to train/: fakes as real
    (source / "train" / "real" / "up").symlink_to("../../..")             # an ancestor of the source
    elsewhere = tmp_path / "elsewhere"
    write_mp4(elsewhere / "outside.mp4", moving_clip(99, 8, 24, 32))
    (source / "train" / "real" / "external").symlink_to(elsewhere)        # leaves the tree: followed
    (source / "train" / "fake" / "twin.mp4").symlink_to(source / "train" / "real" / "clip00000.mp4")
    run_convert(source, tmp_path / "out", max_skip_fraction=0.5)

    found = records_of(tmp_path / "out")
    originals = {p.relative_to(videos).as_posix().encode() for p in videos.rglob("*.mp4")}
    # clip00000 is reached as both real (itself) and fake (twin.mp4): its label is unknown, both names skipped.
    assert set(found) == originals - {b"train/real/clip00000.mp4"} | {b"train/real/external/outside.mp4"}
    for name, label in found.items():
        assert label == (0 if b"/real/" in name else 1), name
    reasons = dict(skipped_rows(tmp_path / "out"))
    assert "under another label" in reasons["train/real/clip00000.mp4"]
    assert "under another label" in reasons["train/fake/twin.mp4"]
    warnings = json.loads((tmp_path / "out" / "metadata.json").read_text())["warnings"]
    assert any(w.startswith("train/real/loop: a link back into the source folder") for w in warnings)
    assert any(w.startswith("train/real/up: a link back into the source folder") for w in warnings)


def test_edited_counts_and_damaged_shards_are_refused_and_a_rerun_repairs(videos, tmp_path, capsys):
    output = tmp_path / "out"
    run_convert(videos, output)
    meta_path = output / "metadata.json"
    original = meta_path.read_text()

    edited = json.loads(original)
    edited["splits"]["train"]["count"] = 400
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="split 'train' says 400 .* its shards hold 6.*re-run the same conversion"):
        pipeline.make_train_dataset(pipeline.open_dataset(output), batch_size=2)

    edited = json.loads(original)
    shard = edited["splits"]["train"]["shards"][0]
    shard["count"] += 100
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=f"{shard['file']} holds {shard['count'] - 100} records, metadata.json says "):
        pipeline.make_train_dataset(pipeline.open_dataset(output), batch_size=2)

    meta_path.write_text(original)
    path = output / shard["file"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{shard['file']} has .* bytes, metadata.json says"):
        pipeline.make_train_dataset(pipeline.open_dataset(output), batch_size=2)
    with pytest.raises(integrity.DatasetIntegrityError, match="truncated"):
        integrity.count_records(path)

    edited = json.loads(original)
    edited["splits"]["train"]["count"] = 7
    meta_path.write_text(json.dumps(edited))
    flipped = output / edited["splits"]["val"]["shards"][0]["file"]
    damaged = bytearray(flipped.read_bytes())
    damaged[40] ^= 0xFF   # same size and count: only the CRC tells
    flipped.write_bytes(bytes(damaged))
    summary = run_convert(videos, output)   # the re-run re-writes what does not match
    assert summary.resumed_shards == 1 and summary.counts == {"train": 6, "val": 2}   # 2 of 3 shards re-written
    assert f"{flipped} is damaged: writing it again" in capsys.readouterr().err
    assert verify.verify_dataset(output) == {"train": 6, "val": 2}
    assert pipeline.make_train_dataset(pipeline.open_dataset(output), batch_size=2)[1] == 6


def test_a_failed_conversion_is_refused_for_training_until_a_run_finishes_it(tmp_path):
    for split in ("train", "val"):
        for label in ("real", "fake"):
            write_png(tmp_path / "src" / split / label / "ok.png", seed=len(split) + len(label))
            (tmp_path / "src" / split / label / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(convert_lib.TooManySkipsError, match="marked incomplete"):
        run_convert(tmp_path / "src", tmp_path / "out", image_size=16)
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert "4 of 8 files were skipped" in meta["incomplete"]
    with pytest.raises(ValueError, match="is an incomplete conversion: 4 of 8 files were skipped"):
        pipeline.make_train_dataset(pipeline.open_dataset(tmp_path / "out"), batch_size=1)

    run_convert(tmp_path / "src", tmp_path / "out", image_size=16, max_skip_fraction=0.6)
    assert "incomplete" not in json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert pipeline.make_train_dataset(pipeline.open_dataset(tmp_path / "out"), batch_size=1)[1] == 2


def test_warnings_for_one_class_repeated_content_conflicting_rows_and_unreadable_folders(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_png(src / "train" / "real" / "a.png", seed=1)
    write_png(src / "train" / "real" / "b.png", seed=2)
    (src / "train" / "real" / "locked").mkdir()
    write_png(src / "train" / "real" / "locked" / "c.png", seed=3)
    (src / "test" / "real").mkdir(parents=True)
    shutil.copy(src / "train" / "real" / "a.png", src / "test" / "real" / "a_copy.png")   # same bytes, other split

    scandir = os.scandir

    def unreadable(path):   # as for a folder without read permission (tests may run as root)
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(sources.os, "scandir", unreadable)
    run_convert(src, tmp_path / "out", image_size=16, max_skip_fraction=0.5)
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert any("only real files" in w for w in meta["warnings"])
    assert "the same content in two splits: test/real/a_copy.png (test), train/real/a.png (train)" in meta["warnings"]
    assert ["train/real/locked/", "cannot read folder: Permission denied"] in skipped_rows(tmp_path / "out")

    (tmp_path / "m.csv").write_text("path,label,split\nsrc/train/real/a.png,real,train\n"
                                    "src/train/real/b.png,fake,test\nsrc/train/real/a.png,fake,train\n")
    run_convert(None, tmp_path / "out_manifest", manifest=str(tmp_path / "m.csv"), image_size=16)
    meta = json.loads((tmp_path / "out_manifest" / "metadata.json").read_text())
    assert any("m.csv:4: src/train/real/a.png conflicting rows: label/split real/train on line 2, fake/train here"
               in w for w in meta["warnings"])
    assert meta["splits"]["train"]["count"] == 1   # used once, from its first row


def test_every_file_of_a_folder_source_is_converted_listed_or_named_in_a_warning(tmp_path):
    src = tmp_path / "src"
    converted = {"train/real/a.png": 0, "train/Real/b.png": 0, "train/fake/c.png": 1, "Train/fake/d.png": 1,
                 "val/real/e.png": 0, "val/FAKE/f.png": 1}
    for index, name in enumerate([*converted, "train/fakes/g.png", "train/Deepfakes/x/h.png", "extra/i.png"]):
        write_png(src / name, seed=index)
    for loose in ("README.md", "train/notes.txt", "train/j.png"):
        (src / loose).write_text("beside the class folders")
    run_convert(src, tmp_path / "out", image_size=16)   # 3 unused files of 12: not skips, not incomplete

    found = records_of(tmp_path / "out")
    assert {name.decode(): label for name, label in found.items()} == converted   # real/ and Real/ both used
    rows = dict(skipped_rows(tmp_path / "out"))
    assert rows == {"README.md": "not inside a split folder (train/val/test, any case): label unknown, not converted",
                    "train/notes.txt": "not inside a class folder (real/fake, any case): label unknown, not converted",
                    "train/j.png": "not inside a class folder (real/fake, any case): label unknown, not converted"}
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["skipped"] == 0 and "incomplete" not in meta
    warnings = meta["warnings"]
    assert "3 file(s) of the source are not converted, their place in the layout giving no label: listed in " \
        "skipped.csv" in warnings
    assert "Train/ and train/ both name train (folder names are read in any case): the files of each are used" \
        in warnings
    assert any(w.startswith("train/Real/ and train/real/ both name real") for w in warnings)
    for folder, count in (("train/fakes", 1), ("train/Deepfakes", 1), ("extra", 1)):
        assert any(w.startswith(f"{folder}/ is not a ") and f"its {count} file(s) are not converted" in w
                   for w in warnings), (folder, warnings)
    # The account is complete: each file is a record, a row of skipped.csv or under a folder a warning names.
    named = ("train/fakes/", "train/Deepfakes/", "extra/")
    for path in src.rglob("*"):
        rel = path.relative_to(src).as_posix()
        assert path.is_dir() or rel in converted or rel in rows or rel.startswith(named), rel

    write_png(tmp_path / "flat" / "videos" / "k.png", seed=9)   # no class folder at all: the error says what is there
    with pytest.raises(ValueError, match=r"no files found under .*flat \(it holds videos/\): expected"):
        run_convert(tmp_path / "flat", tmp_path / "out_flat", image_size=16)


def test_dfdc_is_told_by_its_metadata_not_by_the_file_name(videos, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(videos, source)
    run_convert(videos, source / "copied_dataset")   # a dfd dataset inside a folder source: not DFDC
    (source / "empty").mkdir()
    (source / "empty" / "metadata.json").write_text("{}")
    run_convert(source, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["source"]["type"] == "folder" and meta["splits"]["train"]["count"] == 6
    assert any(w.startswith("copied_dataset/ is not a split folder") for w in meta["warnings"]), meta["warnings"]
    assert any(w.startswith("empty/ is not a split folder") for w in meta["warnings"])
    with pytest.raises(ValueError, match=r"no DFDC metadata under .*\{\"label\": \"REAL\" or \"FAKE\""):
        run_convert(source, tmp_path / "out_dfdc", source_type="dfdc")

    dfdc = tmp_path / "dfdc" / "part_0"
    labels = {"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}}
    for index, name in enumerate([*labels, "unlisted.mp4"]):
        write_mp4(dfdc / name, moving_clip(index, 8, 24, 32))
    (dfdc / "metadata.json").write_text(json.dumps(labels))
    (tmp_path / "dfdc" / "other").mkdir()
    write_mp4(tmp_path / "dfdc" / "other" / "c.mp4", moving_clip(5, 8, 24, 32))
    run_convert(tmp_path / "dfdc", tmp_path / "out_parts")
    meta = json.loads((tmp_path / "out_parts" / "metadata.json").read_text())
    assert meta["source"]["type"] == "dfdc"
    assert set(records_of(tmp_path / "out_parts")) == {b"part_0/a.mp4", b"part_0/b.mp4"}
    assert skipped_rows(tmp_path / "out_parts") == [
        ["part_0/unlisted.mp4", "not listed in part_0/metadata.json: label unknown, not converted"]]
    assert any(w.startswith("other/ is not a DFDC part folder") for w in meta["warnings"])


# ---------------------------------------------------------------------------------------------
# 2. Never delete or damage what dfd did not write
# ---------------------------------------------------------------------------------------------

def test_output_never_touches_files_dfd_did_not_write(videos, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(videos, source)
    before = snapshot(source)
    with pytest.raises(ValueError, match="is the --source folder"):
        run_convert(source, source, overwrite=True)
    with pytest.raises(ValueError, match="is inside the --source folder"):
        run_convert(source, source / "train" / "out")
    assert snapshot(source) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "metadata.json").write_text('{"mine": true}')
    (foreign / "weights.tfrecord").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="is not empty and is not a dfd dataset"):
        run_convert(source, foreign, overwrite=True)
    assert snapshot(foreign) == {"metadata.json": b'{"mine": true}', "weights.tfrecord": b"someone else's"}

    # In dfd's own folder, a re-run and an --overwrite touch only dfd's names.
    output = tmp_path / "out"
    run_convert(source, output)
    (output / "notes.tmp").write_text("keep me")
    (output / "README.txt").write_text("keep me too")
    (output / "train-00000-of-00002.tfrecord.tmp").write_bytes(b"left by a killed run")
    run_convert(source, output)
    assert not (output / "train-00000-of-00002.tfrecord.tmp").exists()
    run_convert(source, output, frame_size=8, overwrite=True)
    assert (output / "notes.tmp").read_text() == "keep me" and (output / "README.txt").read_text() == "keep me too"
    assert DatasetMetadata.load(output).preprocessing.size == 8


def test_dfdc_source_as_output_is_refused_and_its_labels_survive(tmp_path):
    dfdc = tmp_path / "dfdc"
    labels = {"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}}
    for index, name in enumerate(labels):
        write_mp4(dfdc / name, moving_clip(index, 8, 24, 32))
    (dfdc / "metadata.json").write_text(json.dumps(labels))
    before = snapshot(dfdc)
    with pytest.raises(ValueError, match="is the --source folder"):
        run_convert(dfdc, dfdc, overwrite=True)
    assert snapshot(dfdc) == before


def test_dfd_never_writes_through_a_link_in_its_output(videos, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not dfd's")
    output = tmp_path / "out"
    output.mkdir()
    (output / locks.LOCK_FILE).symlink_to(victim)
    with pytest.raises(ValueError, match=f"{output / locks.LOCK_FILE} is a symbolic link \\(to {victim}\\)"):
        run_convert(videos, output)
    (output / locks.LOCK_FILE).unlink()
    (output / locks.LOCK_FILE).symlink_to(tmp_path / "created_outside")   # dangling: O_CREAT would make it
    with pytest.raises(ValueError, match="is a symbolic link"):
        run_convert(videos, output)
    assert not (tmp_path / "created_outside").exists()
    (output / locks.LOCK_FILE).unlink()
    os.link(victim, output / locks.LOCK_FILE)   # a hard link: the same file under two names
    with pytest.raises(ValueError, match="is a hard link to another name"):
        run_convert(videos, output)
    (output / locks.LOCK_FILE).unlink()

    # In dfd's own output, a planted temporary is removed, not written through; a linked state file is
    # refused, and named.
    run_convert(videos, output)
    (output / "skipped.csv.tmp").symlink_to(victim)
    run_convert(videos, output)
    assert not (output / "skipped.csv.tmp").exists() and (output / "skipped.csv").is_file()
    progress = output / writer.PROGRESS_FILE
    progress.unlink()
    progress.symlink_to(victim)
    with pytest.raises(ValueError, match=f"{progress} is a symbolic link .*Remove the link"):
        run_convert(videos, output, frame_size=8, overwrite=True)
    assert victim.read_text() == "not dfd's" and progress.is_symlink()


def test_second_conversion_into_a_locked_folder_exits_with_one_line(videos, tmp_path):
    output = tmp_path / "out"
    with locks.folder_lock(output, "conversion"):
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tfrecords.py"), f"--source={videos}",
                               f"--output={output}", "--workers=1", "--noprogress"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == cli.USER_ERROR_EXIT
    errors = [line for line in done.stderr.splitlines() if line.startswith("make_tfrecords:")]
    assert len(errors) == 1 and f"is in use by process {os.getpid()}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in output.iterdir()) == [locks.LOCK_FILE]


# ---------------------------------------------------------------------------------------------
# 3. Dead workers, odd names, corrupt shards, a full disk
# ---------------------------------------------------------------------------------------------

def test_a_killed_worker_costs_one_file_not_the_run(videos, tmp_path):
    killed = []

    def kill_the_worker(pid, position, path):   # as the OOM killer would, while it holds this file
        if not killed and path.endswith("clip00004.mp4"):
            killed.append(path)
            os.kill(pid, signal.SIGKILL)

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        summary=run_convert(videos, tmp_path / "out", on_send=kill_the_worker, workers=2,
                            max_skip_fraction=0.5)))
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the conversion hung on a dead worker"
    assert killed and sum(outcome["summary"].counts.values()) == 7 and outcome["summary"].skipped == 1
    [(path, reason)] = skipped_rows(tmp_path / "out")
    assert path.endswith(".mp4") and reason.startswith("worker died (signal 9)")
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert verify.verify_dataset(tmp_path / "out") == {"train": 5, "val": 2}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny untrained image model saved as a run, and a dataset with its preprocessing."""
    spec = PreprocessSpec(kind="image", num_frames=1, size=16, encoding="jpeg")
    return untrained_image_run(tmp_path_factory.mktemp("image_run") / "run", spec)


def test_a_file_name_that_is_not_utf8_is_converted_and_scored(tmp_path, image_run):
    source = write_video_folder(tmp_path / "src", {"train": 1}, num_frames=8, height=24, width=32)
    odd = os.fsencode(source / "train" / "fake") + b"/clip\xff\xfe.mp4"
    os.rename(os.fsencode(source / "train" / "fake" / "clip00001.mp4"), odd)
    summary = run_convert(source, tmp_path / "out")
    assert summary.counts == {"train": 2} and summary.skipped == 0
    assert records_of(tmp_path / "out") == {b"train/real/clip00000.mp4": 0, b"train/fake/clip\xff\xfe.mp4": 1}

    # predict reads files through the converter's readers: this crashed the process (exit 139).
    loaded = loading.load(image_run.root)
    [result] = predict.predict_files(loaded, predict.find_files([os.fsdecode(odd)]), video_frames=3, progress=None)
    assert result.error is None and result.frames_used == 3 and 0 <= result.fake_probability <= 1
    assert os.fsencode(result.path) == odd
    # The CSV output holds the name as its own bytes (as skipped.csv does), not an encoding error.
    from dfd.predict import predict_command
    output = tmp_path / "scores.csv"
    assert predict_command(str(image_run.root), [os.fsdecode(odd)], output_format="csv", output=str(output),
                           video_frames=3) == 0
    assert b"clip\xff\xfe.mp4" in output.read_bytes()


def test_a_bit_flipped_shard_is_named_in_training_and_evaluation(tmp_path, image_run):
    from dfd import train_flags
    from dfd.training.run import train

    data = write_fake_dataset(tmp_path / "data", kind="image", size=16, encoding="jpeg",
                              counts={"train": (4, 4), "val": (2, 2), "test": (2, 2)}, shards_per_split=1)
    for split in ("train", "test"):
        shard = data / f"{split}-00000-of-00001.tfrecord"
        flipped = bytearray(shard.read_bytes())
        flipped[40] ^= 0xFF   # inside the first record's data: same size and count, only the CRC tells
        shard.write_bytes(bytes(flipped))
    config = train_flags.TrainConfig(data=str(data), run_dir=str(tmp_path / "run"), model="image_cnn",
                                     hparams={"conv_filters": "4", "kernel_sizes": "3", "dense_units": 4}, epochs=1,
                                     batch_size=4, verbose=0, patience=0, precision="float32")
    with pytest.raises(integrity.DatasetIntegrityError,
                       match="corrupt shard.*train-00000-of-00001.tfrecord .*re-run the same conversion"):
        train(config)
    loaded = loading.load(image_run.root)
    with pytest.raises(integrity.DatasetIntegrityError, match="corrupt shard.*test-00000-of-00001.tfrecord"):
        evaluate.score_split(loaded, evaluate.open_data(loaded, data), "test")


def test_a_full_disk_names_the_path_and_the_rerun_resumes(videos, tmp_path, monkeypatch):
    write = writer.ShardWriter.write
    calls = []

    def full_after_five(self, record):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))
        write(self, record)

    monkeypatch.setattr(writer.ShardWriter, "write", full_after_five)
    with pytest.raises(ValueError, match=r"the disk is full writing .*\.tfrecord\.tmp: free space there and re-run"):
        run_convert(videos, tmp_path / "out")
    monkeypatch.setattr(writer.ShardWriter, "write", write)
    summary = run_convert(videos, tmp_path / "out")
    assert summary.resumed_shards >= 1 and summary.counts == {"train": 6, "val": 2}
