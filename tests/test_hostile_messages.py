"""One line, not a traceback (issue 20 §6): what the machine, the user's files or Ctrl-C do to a running command,
and the messages that used to mislead.

Each case runs the real code path on tiny data made here. Ctrl-C is a real SIGINT to a real command's process
group (as a terminal sends it); a full disk and a read-only folder are the operating system's errors raised
where dfd writes (CI runs as root, whom permission bits do not stop, so the folder is also made 0o555 for a
run as anyone else).
"""

import csv
import errno
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import keras
import pytest

from dfd import cli, models, run_state, train_flags
from dfd.convert import convert as convert_lib
from dfd.data import pipeline
from dfd.data.metadata import DatasetMetadata
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import loading
from dfd.evaluation import predict as predict_lib
from dfd.predict import format_results, predict_command
from dfd.run_layout import RunLayout
from dfd.testing import callbacks as test_callbacks
from dfd.testing.fake_shards import write_fake_dataset
from dfd.testing.synthetic import moving_clip, write_video_folder
from dfd.training import callbacks as train_callbacks
from dfd.training.run import train

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
TINY = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
TRAIN_VALUES = dict(model="cnn_lstm", batch_size=4, learning_rate=0.01, verbose=0, patience=0, precision="float32")


def _config(data, run_dir, **overrides):
    values = dict(data=str(data), run_dir=str(run_dir), hparams=dict(TINY), epochs=1, **TRAIN_VALUES)
    values.update(overrides)
    return train_flags.TrainConfig(**values)


def _through_the_shell(name: str, work, capsys) -> tuple[int, list[str]]:
    """Runs `work()` as the main of command `name` under dfd.cli's error shell: (exit code, stderr lines)."""
    capsys.readouterr()
    code = cli.report_user_errors(lambda argv: work(), name)([name])
    return code, capsys.readouterr().err.strip().splitlines()


def _env():
    env = {name: value for name, value in os.environ.items() if name != cli.SHOW_LOGS_ENV}
    return {**env, "PYTHONPATH": str(ROOT)}


def write_png(path: Path, seed: int, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.resize(moving_clip(seed, 1, 24, 24)[0], (size, size)))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("clips"), num_frames=3, size=16,
                              counts={"train": (32, 32), "val": (4, 4)})


def _saved_run(root: Path, spec: PreprocessSpec, model: keras.Model, data: Path | None = None) -> RunLayout:
    layout = RunLayout(root)
    layout.best_model.parent.mkdir(parents=True)
    model.save(layout.best_model)
    spec.save(layout.preprocessing)
    if data is not None:   # as the trainer records it
        recorded = {**json.loads((data / "metadata.json").read_text()), "directory": str(data.resolve())}
        layout.data_metadata.write_text(json.dumps(recorded))
    return layout


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """An untrained 16x16 image model saved as a run of an image dataset (dfd.evaluate, dfd.export)."""
    root = tmp_path_factory.mktemp("image_run")
    data = write_fake_dataset(root / "data", kind="image", size=16, encoding="jpeg",
                              counts={"val": (2, 2), "test": (2, 2)}, shards_per_split=1)
    keras.utils.set_random_seed(0)
    model = models.build_model("image_cnn", (16, 16, 3), conv_filters=(4,), kernel_sizes=(3,), dense_units=8)
    return _saved_run(root / "run", DatasetMetadata.load(data).preprocessing, model, data)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """An untrained cnn_lstm of 3-frame 16x16 clips saved as a run (predict: a model that scores videos only)."""
    spec = PreprocessSpec(kind="video", num_frames=3, size=16)
    keras.utils.set_random_seed(0)
    model = models.build_model("cnn_lstm", (3, 16, 16, 3), conv_filters=(4,), kernel_sizes=(3,),
                               frame_dense_units=4, lstm_units=4, head_units=4)
    return _saved_run(tmp_path_factory.mktemp("video_run") / "run", spec, model)


# ---------------------------------------------------------------------------------------------
# Ctrl-C: a real SIGINT to the process group of a real conversion and a real training
# ---------------------------------------------------------------------------------------------

# Each finished shard takes 0.5 s more, so the conversion is still running when the test presses Ctrl-C.
_SLOW_CONVERSION = """
    import runpy, sys, time
    from dfd import cli
    cli.quiet_tensorflow()   # as the tool does, before the import of writer loads TensorFlow
    from dfd.convert import writer

    close = writer.ShardWriter.close

    def slow_close(self):
        size = close(self)
        time.sleep(0.5)
        return size

    writer.ShardWriter.close = slow_close
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _wait_for(condition, process, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the command never reached the point to interrupt"
        time.sleep(0.1)


def _shards_recorded(output: Path) -> int:
    try:
        return len(json.loads((output / ".progress.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def interrupted(clips, tmp_path_factory):
    """A conversion and a training, each interrupted by Ctrl-C (SIGINT to its whole process group, workers
    included) once it has finished some work; both start together (each pays TensorFlow's start-up)."""
    root = tmp_path_factory.mktemp("interrupted")
    videos = write_video_folder(root / "videos", {"train": 3, "val": 1}, num_frames=8, height=24, width=32)
    output, run_dir = root / "out", root / "run"
    convert_args = [str(ROOT / "tools" / "make_tfrecords.py"), f"--source={videos}", f"--output={output}",
                    "--frames=4", "--frame_size=16", "--shard_mb=0.001", "--workers=1", "--noprogress"]
    train_args = ["-m", "dfd.train", f"--data={clips}", f"--run_dir={run_dir}", "--epochs=500",
                  *(f"--{name}={value}" for name, value in {**TRAIN_VALUES, **TINY}.items())]
    # pytest-xdist's workers ignore SIGINT, and an ignored signal stays ignored in children (Python then
    # installs no KeyboardInterrupt handler): give the commands a terminal's default disposition.
    terminal = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    processes = {
        "convert": subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SLOW_CONVERSION), *convert_args],
                                    env=_env(), cwd=str(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True, preexec_fn=terminal),
        "train": subprocess.Popen([sys.executable, *train_args], env=_env(), cwd=str(root), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=terminal),
    }
    ready = {"convert": lambda: _shards_recorded(output) >= 1,
             "train": lambda: (run_dir / "history.json").is_file()}
    results = {}
    try:
        for name in ("convert", "train"):
            _wait_for(ready[name], processes[name])
            os.killpg(processes[name].pid, signal.SIGINT)   # what Ctrl-C in a terminal does
            _, err = processes[name].communicate(timeout=300)
            results[name] = (processes[name].returncode, err)
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {"videos": videos, "output": output, "run_dir": run_dir, **results}


def test_ctrl_c_in_a_conversion_is_one_line_and_the_rerun_resumes(interrupted):
    code, err = interrupted["convert"]
    assert code == cli.INTERRUPTED_EXIT, err[-3000:]
    assert TRACEBACK not in err and "KeyboardInterrupt" not in err, err[-3000:]   # nor one from each worker
    assert err.strip().splitlines()[-1] == "make_tfrecords: interrupted; re-run the same command to resume"
    summary = convert_lib.convert(convert_lib.ConvertConfig(
        source=str(interrupted["videos"]), output=str(interrupted["output"]), num_frames=4, frame_size=16,
        shard_mb=0.001, workers=1, progress=False))
    assert summary.resumed_shards >= 1 and summary.counts == {"train": 6, "val": 2}


def test_ctrl_c_in_training_is_one_line_and_the_rerun_resumes(interrupted, clips):
    code, err = interrupted["train"]
    assert code == cli.INTERRUPTED_EXIT, err[-3000:]
    assert TRACEBACK not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines() == ["dfd.train: interrupted; re-run the same command to resume"]
    layout = RunLayout(interrupted["run_dir"])
    completed = run_state.completed_epochs(layout)
    assert completed >= 1
    recorder = test_callbacks.EpochRecorder()
    # The same command (--epochs only says how long: fewer, so the test ends) continues from the backup.
    train(_config(clips, layout.root, epochs=completed + 1), extra_callbacks=[recorder])
    assert recorder.epochs == [completed]
    assert [e["epoch"] for e in json.loads(layout.history.read_text())["epochs"]] == list(range(1, completed + 2))


# ---------------------------------------------------------------------------------------------
# A full disk, a folder it may not write to
# ---------------------------------------------------------------------------------------------

def test_a_full_disk_during_training_is_one_line_and_the_rerun_resumes(clips, tmp_path, capsys, monkeypatch):
    save = train_callbacks.save_model_atomically

    def disk_full(model, path):   # best.keras of epoch 1: the disk fills half-way through the file
        partial = RunLayout.partial(path)
        partial.write_bytes(b"PK\x03\x04 half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(partial))

    monkeypatch.setattr(train_callbacks, "save_model_atomically", disk_full)
    config = _config(clips, tmp_path / "run", epochs=2)
    code, lines = _through_the_shell("dfd.train", lambda: train(config), capsys)
    assert code == cli.USER_ERROR_EXIT and len(lines) == 1, lines
    partial = RunLayout.partial(RunLayout(config.run_dir).best_model)
    assert lines[0].startswith(f"dfd.train: the disk is full (writing {partial}): ")
    assert lines[0].endswith("free space there and re-run the same command; it resumes where it stopped")

    monkeypatch.setattr(train_callbacks, "save_model_atomically", save)
    recorder = test_callbacks.EpochRecorder()
    train(config, extra_callbacks=[recorder])   # the same command, once there is space
    layout = RunLayout(config.run_dir)
    assert recorder.epochs == [1] and layout.best_model.is_file() and layout.final_model.is_file()
    keras.saving.load_model(layout.best_model, compile=False)   # a whole model, not the half-written file


def test_a_full_disk_reported_by_tensorflow_is_one_line(capsys):
    def tensorboard_write():   # how TensorFlow's file writers say it, wrapped as a Keras callback may wrap it
        try:
            raise RuntimeError("RESOURCE_EXHAUSTED: runs/x/tb/events.out; No space left on device")
        except RuntimeError as error:
            raise RuntimeError("callback failed") from error

    code, lines = _through_the_shell("dfd.evaluate", tensorboard_write, capsys)
    assert code == cli.USER_ERROR_EXIT
    assert lines == ["dfd.evaluate: the disk is full: free space there and re-run the same command"]


def _make_read_only(folder: Path, monkeypatch) -> None:
    """`folder` refuses new files and folders, as the system refuses them to a user without write permission."""
    real = os.path.realpath(folder)
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | getattr(os, "O_TMPFILE", 0)
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path) -> bool:
        path = os.path.realpath(os.fsdecode(path))
        return path == real or path.startswith(real + os.sep)

    def guarded_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & writes and dir_fd is None and inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def guarded_mkdir(path, mode=0o777, *, dir_fd=None):
        if dir_fd is None and inside(os.path.dirname(os.path.abspath(os.fsdecode(path)))):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    folder = tmp_path / "read_only"
    folder.mkdir()
    yield folder, lambda: _make_read_only(folder, monkeypatch)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)   # so pytest can remove it


def test_read_only_run_dirs_and_outputs_are_one_line_errors(clips, image_run, read_only, tmp_path, capsys):
    from dfd.evaluation.evaluate import evaluate
    from dfd.evaluation.export import export

    folder, make_read_only = read_only
    shutil.copytree(image_run.root, folder / "run")
    source = tmp_path / "source"
    write_png(source / "real" / "a.png", seed=1)
    make_read_only()
    cases = {
        "dfd.train": (lambda: train(_config(clips, folder / "new_run")), f"--run_dir={folder / 'new_run'}",
                      folder),
        "dfd.evaluate": (lambda: evaluate(folder / "run", "test"), f"--run_dir={folder / 'run'}", folder / "run"),
        "dfd.export": (lambda: export(image_run.root, folder / "export"), f"--output={folder / 'export'}", folder),
        "make_tfrecords": (lambda: convert_lib.convert(convert_lib.ConvertConfig(
            source=str(source), output=str(folder / "out"), progress=False)), f"--output={folder / 'out'}", folder),
        "dfd.predict": (lambda: predict_command(str(image_run.root), [str(source / "real" / "a.png")],
                                                output=str(folder / "scores.json")),
                        f"--output={folder / 'scores.json'}", folder),
    }
    for name, (work, flag, unwritable) in cases.items():
        code, lines = _through_the_shell(name, work, capsys)
        assert code == cli.USER_ERROR_EXIT and len(lines) == 1, (name, lines)
        assert lines[0].startswith(f"{name}: {flag}: the folder {unwritable} is not writable ("), lines
        assert "give a folder this user can write to" in lines[0]
    assert sorted(path.name for path in folder.iterdir()) == ["run"]   # nothing created
    assert not (folder / "run" / "eval").exists()

    # Anything refused later, mid-command, leaves the same way (the shell's backstop).
    code, lines = _through_the_shell("dfd.evaluate", lambda: (folder / "run" / "eval").mkdir(), capsys)
    assert code == cli.USER_ERROR_EXIT
    assert lines == [f"dfd.evaluate: the folder {folder / 'run'} is not writable (Permission denied); give a "
                     "folder this user can write to, or change its permissions"]


# ---------------------------------------------------------------------------------------------
# Damaged dfd files name themselves
# ---------------------------------------------------------------------------------------------

def test_a_malformed_metadata_json_is_named(clips, tmp_path):
    original = json.loads((clips / "metadata.json").read_text())
    shard = original["splits"]["train"]["shards"][0]
    cases = [
        ([], "it holds a JSON list, not an object"),
        ({k: v for k, v in original.items() if k != "preprocessing"}, "it has no 'preprocessing' object"),
        ({**original, "splits": [1, 2]}, "it has no 'splits' object"),
        ({**original, "splits": {"train": {**original["splits"]["train"], "count": "many"}}},
         "split 'train' has no valid 'count' \\('many'\\)"),
        ({**original, "splits": {"train": {**original["splits"]["train"],
                                           "shards": [{k: v for k, v in shard.items() if k != "bytes"}]}}},
         f"shard {shard['file']} has no valid 'bytes' \\(None\\)"),
    ]
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    for content, problem in cases:
        (data / "metadata.json").write_text(json.dumps(content))
        with pytest.raises(ValueError, match=f"{data / 'metadata.json'} is not a dfd metadata.json: {problem}. "
                                             "Re-run the conversion") as raised:
            pipeline.open_dataset(data)
        assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="is not a dfd metadata.json: it holds a JSON list"):   # train opens it too
        (data / "metadata.json").write_text("[]")
        train(_config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_damaged_progress_file_is_named_and_overwrite_starts_again(tmp_path):
    source = tmp_path / "source"
    for split in ("train", "val"):
        for label, seed in (("real", 1), ("fake", 2)):
            write_png(source / split / label / "a.png", seed=seed + len(split))
    output = tmp_path / "out"

    def run(**options):
        return convert_lib.convert(convert_lib.ConvertConfig(source=str(source), output=str(output), image_size=16,
                                                             progress=False, workers=1, **options))

    run()
    for content, problem in [("[]", "a JSON list, not an object"), ('{"fingerprint": "x"}', "no 'fingerprint'"),
                             ("{not json", "not JSON")]:
        (output / ".progress.json").write_text(content)
        with pytest.raises(ValueError, match=f"{output / '.progress.json'} is damaged \\({problem}") as raised:
            run()
        assert "--overwrite" in str(raised.value) and "\n" not in str(raised.value)
    assert run(overwrite=True).counts == {"train": 2, "val": 2}
    assert json.loads((output / ".progress.json").read_text())["shards"]

    # A conversion interrupted before its metadata.json: only the damaged progress file says the folder is dfd's.
    (output / "metadata.json").unlink()
    (output / ".progress.json").write_text("[]")
    with pytest.raises(ValueError, match="is damaged"):
        run()
    assert run(overwrite=True).counts == {"train": 2, "val": 2}


# ---------------------------------------------------------------------------------------------
# Manifests as spreadsheets save them
# ---------------------------------------------------------------------------------------------

def test_a_manifest_with_a_byte_order_mark_is_read_and_a_latin1_one_is_named(tmp_path):
    for name, seed in (("a.png", 1), ("b.png", 2), ("c.png", 3), ("d.png", 4)):
        write_png(tmp_path / name, seed=seed)
    rows = "path,label,split\na.png,real,train\nb.png,fake,train\nc.png,real,val\nd.png,fake,val\n"
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(rows.replace("\n", "\r\n").encode("utf-8-sig"))   # Excel's "CSV UTF-8"
    config = dict(manifest=str(manifest), image_size=16, progress=False, workers=1)
    summary = convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "out"), **config))
    assert summary.counts == {"train": 2, "val": 2}

    write_png(tmp_path / "café.png", seed=5)
    manifest.write_bytes((rows + "café.png,real,train\n").encode("latin-1"))
    with pytest.raises(ValueError, match=f"{manifest} is not UTF-8 text \\(byte 0xe9 on line 6\\): save it as "
                                         "UTF-8"):
        convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "out2"), **config))


# ---------------------------------------------------------------------------------------------
# Runs and models
# ---------------------------------------------------------------------------------------------

def test_other_data_names_the_data_the_run_was_trained_on_and_the_new_one(clips, tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    config = _config(clips, layout.root)
    layout.flags.write_text(train_flags.flagfile_text(config))
    recorded = {**json.loads((clips / "metadata.json").read_text()), "directory": str(clips.resolve())}
    layout.data_metadata.write_text(json.dumps(recorded))
    other = {**recorded, "directory": str(tmp_path / "other")}
    assert run_state.differences(layout, config, other) == [
        f"it was trained on other data ({clips.resolve()} there, {tmp_path / 'other'} now)"]
    reconverted = {**recorded, "preprocessing": {**recorded["preprocessing"], "size": 8}}
    [difference] = run_state.differences(layout, config, reconverted)
    assert difference.startswith(f"it was trained on other data ({clips.resolve()} as it was then: converted again")


def test_export_of_a_run_whose_data_was_converted_again_at_another_size(image_run, tmp_path, capsys):
    from dfd.evaluation.export import export

    run = tmp_path / "run"
    shutil.copytree(image_run.root, run)
    data = RunLayout(run).data_metadata
    reconverted = write_fake_dataset(tmp_path / "data8", kind="image", size=8, encoding="jpeg",
                                     counts={"test": (2, 2)}, shards_per_split=1)
    data.write_text(json.dumps({**json.loads((reconverted / "metadata.json").read_text()),
                                "directory": str(reconverted)}))
    difference = export(run, tmp_path / "export", verbose=False)   # failed inside Keras on 8x8 frames
    assert difference <= 1e-5 and (tmp_path / "export" / "saved_model.pb").is_file()
    err = capsys.readouterr().err
    assert f"{reconverted} was converted with different preprocessing than the model" in err
    assert "verified on random pixels instead" in err


def test_a_model_with_a_class_dfd_does_not_know_is_one_short_line(tmp_path):
    class Scale(keras.layers.Layer):   # not registered: another program's custom layer
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((4,))
    path = tmp_path / "other.keras"
    keras.Model(inputs, Scale()(keras.layers.Dense(2)(inputs))).save(path)
    with pytest.raises(ValueError) as raised:
        loading.load_keras_model(path)
    message = str(raised.value)
    assert message == (f"{path}: the model file uses a class dfd does not know: Scale; was it saved by another "
                       "program or another dfd version? dfd loads its own models (dfd.train)")


# ---------------------------------------------------------------------------------------------
# Predict: what a file is, which files a folder holds, a CSV a spreadsheet opens safely
# ---------------------------------------------------------------------------------------------

def test_a_text_file_named_jpg_is_not_an_image_for_a_video_model(video_run, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a photo\n")
    video = tmp_path / "clip.mp4"
    video.write_text("not a video either\n")
    loaded = loading.load(video_run.root)
    results = predict_lib.predict_files(loaded, [str(text), str(video)], video_frames=3, progress=None)
    assert [result.error for result in results] == [   # the first was "the model ... cannot score an image"
        "not an image or video file (unrecognised content despite its .jpg extension)",
        "not an image or video file (unrecognised content despite its .mp4 extension)"]


def test_predict_folder_scan_skips_hidden_folders_follows_links_and_says_so(video_run, tmp_path, capsys):
    folder = tmp_path / "inputs"
    for name in ("a.jpg", ".hidden/b.jpg", "sub/c.mp4", "._a.jpg", "notes.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "d.png").parent.mkdir()
    (elsewhere / "d.png").write_text("x")
    (folder / "linked").symlink_to(elsewhere)        # a dataset kept on another disk: followed
    (folder / "sub" / "loop").symlink_to("..")      # back up the tree: not followed round and round
    notes = []
    found = predict_lib.find_files([str(folder)], notes)
    assert found == [str(folder / "a.jpg"), str(folder / "linked" / "d.png"), str(folder / "sub" / "c.mp4")]
    assert notes == [f"{folder / 'sub' / 'loop'}: a link loop (to {folder}), not followed",
                     f"1 hidden folder(s) not scanned: {folder / '.hidden'}"]

    assert predict_command(str(video_run.root), [str(folder)], stdout=io.StringIO()) == 1   # none is real media
    err = capsys.readouterr().err.splitlines()
    assert f"dfd.predict: 1 hidden folder(s) not scanned: {folder / '.hidden'}" in err
    assert f"dfd.predict: {folder / 'sub' / 'loop'}: a link loop (to {folder}), not followed" in err


def test_predict_csv_cells_are_never_spreadsheet_formulas(video_run, tmp_path, monkeypatch):
    folder = tmp_path / "inputs"
    folder.mkdir()
    names = ['=HYPERLINK("https:example.com","x").mp4', "+1.mp4", "-1.mp4", "@SUM(A1).mp4", "plain.mp4"]
    for name in names:
        (folder / name).write_text("x")
    output = tmp_path / "scores.csv"
    monkeypatch.chdir(folder)   # the names as a user types them there
    predict_command(str(video_run.root), names, output_format="csv", output=str(output))
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == ["'" + name if name[0] in "=+-@" else name for name in names]
    assert all(row["error"].startswith("not an image or video file") for row in rows)

    from dfd.evaluation.predict import FileResult
    results = [FileResult(path=name, error="-not a video", fake_probability=0.25) for name in names]
    results.append(FileResult(path="\tTAB.mp4"))
    rows = list(csv.DictReader(io.StringIO(format_results(results, "csv"))))
    assert [row["path"] for row in rows] == [
        "'=HYPERLINK(\"https:example.com\",\"x\").mp4", "'+1.mp4", "'-1.mp4", "'@SUM(A1).mp4", "plain.mp4",
        "'\tTAB.mp4"]
    assert {row["error"] for row in rows[:-1]} == {"'-not a video"} and rows[0]["fake_probability"] == "0.25"
