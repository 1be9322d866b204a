"""Run directories you can trust (issue 13): what a careless or hostile user does to dfd.train, dfd.tune and
dfd.predict, and what must come out: a clear one-line error, or files left exactly as they were.

Kills are real (SIGKILL in a subprocess) where the point is what a dead process leaves behind; the
subprocesses start together so the module stays fast on 2 cores.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from dfd import cli, run_state, train_flags
from dfd.locks import FolderLockedError
from dfd.models import augmentation
from dfd.run_layout import RunLayout
from dfd.testing.callbacks import EpochRecorder
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
TRACEBACK = "Traceback (most recent call last)"


def _config(data, run_dir, **overrides):
    values = dict(data=str(data), run_dir=str(run_dir), model="cnn_lstm", hparams=dict(TINY), epochs=1,
                  batch_size=8, learning_rate=0.01, verbose=0, patience=0, precision="float32")
    values.update(overrides)
    return train_flags.TrainConfig(**values)


def _env(**extra):
    env = {name: value for name, value in os.environ.items() if name != cli.SHOW_LOGS_ENV}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _start(code: str, tmp_path: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=str(tmp_path), env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _command(args: list[str], tmp_path: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=str(tmp_path), env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _digest(folder: Path) -> dict:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".dfd.lock"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("clips"), num_frames=3, size=16,
                              counts={"train": (8, 8), "val": (4, 4)})


@pytest.fixture(scope="module")
def finished(clips, tmp_path_factory):
    """A finished one-step run, plus the threshold and eval files dfd.evaluate would add."""
    config = _config(clips, tmp_path_factory.mktemp("finished") / "run", batch_size=16)
    summary = train(config)
    layout = RunLayout(config.run_dir)
    layout.threshold.write_text(json.dumps({"threshold": 0.4, "method": "val_eer"}))
    layout.eval_dir("val").mkdir(parents=True)
    (layout.eval_dir("val") / "metrics.json").write_text("{}")
    return config, summary


# --------------------------------------------------------------------------
# Kills: started once for the module, in parallel (each subprocess pays TensorFlow's start-up)
# --------------------------------------------------------------------------

_KILL_SCRIPT = """
    import os, signal, sys
    import keras
    from dfd import train_flags
    from dfd.training.config import Augment   # the repr of config.augment below
    from dfd.training.run import train

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.save_weights(f"epoch{{epoch + 1}}.weights.h5")
            if {when!r} == "after_epoch_1" and epoch == 0:
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            if {when!r} == "after_fit":
                os.kill(os.getpid(), signal.SIGKILL)

    config = train_flags.TrainConfig(**{config!r})
    train(config, extra_callbacks=[Kill()])
"""


def _config_dict(config):
    return {**config.__dict__}


@pytest.fixture(scope="module")
def killed_runs(clips, tmp_path_factory):
    """Two runs killed for real: one after epoch 1 of 2, one after fit but before model.keras."""
    runs = {}
    processes = {}
    for when in ("after_epoch_1", "after_fit"):
        folder = tmp_path_factory.mktemp(when)
        config = _config(clips, folder / "run", epochs=2 if when == "after_epoch_1" else 1, batch_size=4)
        processes[when] = _start(_KILL_SCRIPT.format(when=when, config=_config_dict(config)), folder)
        runs[when] = (config, folder)
    for process in processes.values():
        _, err = process.communicate(timeout=300)
        assert process.returncode == -9, err[-3000:]
    return runs


class _SaveAndWorsen(keras.callbacks.Callback):
    """Makes the resumed epoch worse than epoch 1 on validation (the head flipped: AUC -> 1 - AUC)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def on_test_begin(self, logs=None):
        # The trainer wraps the model behind its augmentation layer: the head is the inner model's last layer.
        head = augmentation.unwrap(self.model).layers[-1]
        head.kernel.assign(-head.kernel)
        head.bias.assign(-head.bias)

    def on_epoch_end(self, epoch, logs=None):
        self.model.save_weights(str(self.folder / f"epoch{epoch + 1}.weights.h5"))


def _same_weights(model_path: Path, weights_path: Path, like) -> bool:
    loaded = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    like.load_weights(str(weights_path))
    return all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), like.get_weights(), strict=True))


def test_best_keras_holds_the_summary_best_epoch_across_a_real_kill(killed_runs):
    config, folder = killed_runs["after_epoch_1"]
    layout = RunLayout(config.run_dir)
    assert layout.backup.exists() and not layout.final_model.exists()
    recorder = EpochRecorder()
    summary = train(config, extra_callbacks=[_SaveAndWorsen(folder), recorder])   # the same command: resumes
    assert recorder.epochs == [1]
    history = json.loads(layout.history.read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[0]["val_auc"] > history[1]["val_auc"], "the resumed epoch must be the worse one"
    assert summary["best_epoch"] == 1 == json.loads(layout.summary.read_text())["best_epoch"]
    # Keras's ModelCheckpoint restarted at -inf and wrote epoch 2 here.
    model = keras.saving.load_model(layout.final_model, compile=False)
    assert _same_weights(layout.best_model, folder / "epoch1.weights.h5", model)
    assert not layout.backup.exists()


def test_a_kill_after_the_last_epoch_finishes_without_training_again(killed_runs):
    config, folder = killed_runs["after_fit"]
    layout = RunLayout(config.run_dir)
    assert layout.backup.exists(), "the backup must outlive fit until the final files are written"
    assert not layout.final_model.exists() and not layout.summary.exists()
    recorder = EpochRecorder()
    summary = train(config, extra_callbacks=[recorder])
    assert recorder.epochs == []   # before: the whole run again from epoch 1
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert layout.final_model.is_file() and not layout.backup.exists()
    model = keras.saving.load_model(layout.final_model, compile=False)
    assert _same_weights(layout.final_model, folder / "epoch1.weights.h5", model)
    assert _same_weights(layout.best_model, folder / "epoch1.weights.h5", model)


# --------------------------------------------------------------------------
# Command lines: one line on stderr, exit code 2, no traceback, TensorFlow's start-up quiet
# --------------------------------------------------------------------------

_HOLD_LOCK = """
    import sys, time
    from dfd.locks import folder_lock
    with folder_lock(sys.argv[1], "training"):
        print("holding", flush=True)
        time.sleep(120)
"""


@pytest.fixture
def locked_run_dir(tmp_path):
    run_dir = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLD_LOCK), str(run_dir)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    yield run_dir, holder.pid
    holder.kill()
    holder.wait()


def test_commands_report_user_errors_in_one_quiet_line(clips, locked_run_dir, tmp_path):
    run_dir, holder = locked_run_dir
    one_class = write_fake_dataset(tmp_path / "one_class", num_frames=3, size=16,
                                   counts={"train": (4, 0), "val": (2, 2)})
    base = ["-m", "dfd.train", "--model=cnn_lstm", "--conv_filters=4", "--kernel_sizes=3", "--epochs=1",
            "--batch_size=2", "--verbose=0"]
    processes = {
        # Fails after TensorFlow has looked for devices (where cuInit is logged on a CPU-only machine).
        "quiet": _command(base + [f"--data={one_class}", f"--run_dir={tmp_path / 'a'}"], tmp_path),
        "logs": _command(base + [f"--data={one_class}", f"--run_dir={tmp_path / 'b'}"], tmp_path, DFD_TF_LOGS="1"),
        "locked": _command(base + [f"--data={clips}", f"--run_dir={run_dir}"], tmp_path),
        "nan": _command(base + [f"--data={clips}", f"--run_dir={tmp_path / 'c'}", "--learning_rate=nan"], tmp_path),
    }
    results = {name: (process.wait(timeout=300), process.stdout.read(), process.stderr.read())
               for name, process in processes.items()}

    code, _, err = results["quiet"]
    assert code == cli.USER_ERROR_EXIT and TRACEBACK not in err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("dfd.train: ") and "only one class" in err
    assert "cuInit" not in err and "oneDNN" not in err and "InitializeLog" not in err

    code, _, err = results["logs"]   # DFD_TF_LOGS=1 leaves TensorFlow's own logging alone
    assert code == cli.USER_ERROR_EXIT and "only one class" in err
    assert any(cli._LOG_LINE.match(line) or line.startswith(cli._BANNER) for line in err.splitlines()), err

    code, _, err = results["locked"]   # two trainings into one run dir
    assert code == cli.USER_ERROR_EXIT and TRACEBACK not in err and len(err.strip().splitlines()) == 1
    assert f"in use by process {holder}" in err and "another training" in err
    assert sorted(path.name for path in run_dir.iterdir()) == [".dfd.lock"]   # nothing written

    code, _, err = results["nan"]
    assert code == cli.USER_ERROR_EXIT and TRACEBACK not in err and len(err.strip().splitlines()) == 1
    assert "--learning_rate=nan must be a positive finite number" in err
    assert not (tmp_path / "c").exists()


def test_a_second_trainer_or_tuner_in_process_is_refused(clips, locked_run_dir):
    run_dir, holder = locked_run_dir
    with pytest.raises(FolderLockedError, match=f"in use by process {holder}"):
        train(_config(clips, run_dir))
    from dfd.tuning.flags import TuneOptions
    from dfd.tuning.search import run_search
    with pytest.raises(FolderLockedError, match=f"in use by process {holder}"):
        run_search(_config(clips, run_dir), TuneOptions(tuner="random", max_trials=1, max_epochs=1))
    assert sorted(path.name for path in run_dir.iterdir()) == [".dfd.lock"]


def test_a_linked_lock_or_state_file_is_refused_never_written_through(clips, tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("not dfd's")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".dfd.lock").symlink_to(victim)
    from dfd.tuning.flags import TuneOptions
    from dfd.tuning.search import run_search
    with pytest.raises(ValueError, match=f"{run_dir / '.dfd.lock'} is a symbolic link \\(to {victim}\\)"):
        train(_config(clips, run_dir))
    with pytest.raises(ValueError, match="is a symbolic link"):
        run_search(_config(clips, run_dir), TuneOptions(tuner="random", max_trials=1, max_epochs=1))
    assert victim.read_text() == "not dfd's" and sorted(path.name for path in run_dir.iterdir()) == [".dfd.lock"]

    # The atomic writer every JSON file of a run goes through: a linked target is refused, not replaced; a
    # leftover temporary (a link planted under its name) is removed, its target untouched.
    from dfd import atomic_files
    layout = RunLayout(run_dir)
    layout.summary.symlink_to(victim)
    with pytest.raises(ValueError, match=f"{layout.summary} is a symbolic link .*Remove the link"):
        atomic_files.write_json(layout.summary, {"epochs": 1})
    assert layout.summary.is_symlink()
    layout.history.with_name(layout.history.name + atomic_files.TMP_SUFFIX).symlink_to(victim)
    atomic_files.write_json(layout.history, {"epochs": []})
    assert json.loads(layout.history.read_text()) == {"epochs": []} and not layout.history.is_symlink()
    assert victim.read_text() == "not dfd's"


# --------------------------------------------------------------------------
# Another run in the same run dir; --overwrite; a finished run re-run
# --------------------------------------------------------------------------

def test_another_model_or_data_in_a_finished_run_dir_is_refused(finished, tmp_path):
    config, _ = finished
    layout = RunLayout(config.run_dir)
    before = _digest(layout.root)
    other_model = _config(config.data, config.run_dir, hparams={**TINY, "lstm_units": 6}, batch_size=16)
    with pytest.raises(ValueError, match=r"holds another training run \(--lstm_units=4 there, "
                                         r"--lstm_units=6 now\).*--overwrite"):
        train(other_model)
    other_data = write_fake_dataset(tmp_path / "other", num_frames=3, size=16,
                                    counts={"train": (8, 8), "val": (4, 4)}, seed=1)
    with pytest.raises(ValueError, match="trained on other data"):
        train(_config(other_data, config.run_dir, batch_size=16))
    assert _digest(layout.root) == before   # the old model, threshold and evaluation untouched


def test_the_same_command_on_a_finished_run_changes_nothing(finished):
    config, summary = finished
    layout = RunLayout(config.run_dir)
    before = _digest(layout.root)
    recorder = EpochRecorder()
    # Flags that only change how visibly it trains do not make another run.
    again = train(_config(config.data, config.run_dir, batch_size=16, verbose=2), extra_callbacks=[recorder])
    assert recorder.epochs == [] and again == json.loads(layout.summary.read_text())
    assert _digest(layout.root) == before
    with pytest.raises(ValueError, match="finished run of --epochs=1.*--overwrite"):
        train(_config(config.data, config.run_dir, batch_size=16, epochs=3))


def test_overwrite_starts_clean_and_keeps_foreign_files(clips, tmp_path):
    first = _config(clips, tmp_path / "run", batch_size=16)
    train(first)
    layout = RunLayout(first.run_dir)
    layout.threshold.write_text(json.dumps({"threshold": 0.3}))
    (layout.root / "eval" / "test").mkdir(parents=True)
    (layout.root / "notes.txt").write_text("mine")
    (layout.root / "mine").mkdir()
    (layout.root / "mine" / "model.keras").write_text("not dfd's")
    second = _config(clips, layout.root, batch_size=16, model="cnn_lstm", hparams={**TINY, "head_units": 2})
    with pytest.raises(ValueError, match="--overwrite"):
        train(second)
    train(second, overwrite=True)
    assert "--head_units=2" in layout.flags.read_text()
    assert not layout.threshold.exists() and not (layout.root / "eval").exists()   # no stale threshold
    assert (layout.root / "notes.txt").read_text() == "mine"
    assert (layout.root / "mine" / "model.keras").read_text() == "not dfd's"
    assert json.loads(layout.history.read_text())["epochs"][0]["epoch"] == 1 and layout.final_model.is_file()


def test_same_run_compares_settings_not_formatting(clips, tmp_path):
    layout = RunLayout(tmp_path)
    config = _config(clips, tmp_path)
    layout.flags.write_text(train_flags.flagfile_text(config))
    metadata = {**json.loads((clips / "metadata.json").read_text()), "directory": str(clips.resolve())}
    layout.data_metadata.write_text(json.dumps(metadata))
    assert run_state.differences(layout, _config(clips, tmp_path, epochs=9, patience=2, verbose=1), metadata) == []
    assert run_state.differences(layout, _config(clips, tmp_path, augment_flip=False), metadata) == [
        "--augment_flip there, --noaugment_flip now"]
    assert run_state.differences(layout, _config(clips, tmp_path, precision="mixed_float16"), metadata)
    moved = {**metadata, "directory": "/elsewhere"}
    assert run_state.differences(layout, config, moved) == [
        f"it was trained on other data ({clips.resolve()} there, /elsewhere now)"]


# --------------------------------------------------------------------------
# User errors before anything starts
# --------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": math.nan}, "--learning_rate=nan must be a positive finite number"),
    ({"learning_rate": math.inf}, "--learning_rate=inf"),
    ({"learning_rate": -0.1}, "--learning_rate=-0.1"),
    ({"batch_size": 0}, "--batch_size=0 must be at least 1"),
    ({"epochs": 0}, "--epochs=0"),
    ({"augment_brightness": -1.0}, "--augment_brightness=-1.0 must be between 0 and 1"),
    ({"class_weight_threshold": math.nan}, "--class_weight_threshold=nan"),
    ({"hparams": {**TINY, "dropout": 1.5}}, r"--dropout=1.5 must be in \[0, 1\)"),
    ({"hparams": {**TINY, "l2": -1e-3}}, "--l2=-0.001 must be 0 or more"),
    ({"hparams": {**TINY, "lstm_units": 0}}, "--lstm_units=0 must be at least 1"),
])
def test_impossible_values_are_refused(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, tmp_path / "run", **overrides)


def test_data_and_run_dir_mistakes_are_one_line_errors(clips, tmp_path):
    images = write_fake_dataset(tmp_path / "images", kind="image", size=16, counts={"train": (2, 2), "val": (2, 2)})
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    (tmp_path / "empty").mkdir()
    cases = [
        (_config(images, tmp_path / "r1"), "is a video model but .* holds image records"),
        (_config(clips, a_file), "is a file, not a folder"),
        (_config(clips, a_file / "run"), "is a file, not a folder"),
        (_config(tmp_path / "empty", tmp_path / "r2"), "metadata.json is missing"),
    ]
    for config, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            train(config)
        assert "\n" not in str(raised.value)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()   # nothing created


# --------------------------------------------------------------------------
# Predict: the output is checked before scoring and never written over an input
# --------------------------------------------------------------------------

def test_predict_output_is_checked_before_scoring(finished, tmp_path, monkeypatch):
    from dfd.evaluation import predict as predict_module
    from dfd.predict import predict_command

    config, _ = finished
    inputs = tmp_path / "videos"
    inputs.mkdir()
    video = inputs / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 precious")
    scored = []
    real_predict_files = predict_module.predict_files
    monkeypatch.setattr(predict_module, "predict_files",
                        lambda *a, **k: scored.append(1) or real_predict_files(*a, **k))

    for output, message in [(video, "is one of the input files"),
                            (inputs / "results.json", "inside .*a folder being scanned"),
                            (tmp_path, "is a folder"),
                            (tmp_path / "missing" / "out.json", "does not exist; create it first")]:
        args = [str(inputs)] if output != video else [str(video)]
        with pytest.raises(ValueError, match=message):
            predict_command(config.run_dir, args, output=str(output))
    assert scored == [] and video.read_bytes() == b"\x00\x00\x00\x18ftypmp42 precious"

    output = tmp_path / "out.json"
    assert predict_command(config.run_dir, [str(video)], output=str(output)) == 1   # not a real video
    assert json.loads(output.read_text())[0]["error"] and scored == [1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.json", "videos"]   # no partial file left


# --------------------------------------------------------------------------
# Damaged run files name themselves
# --------------------------------------------------------------------------

def test_damaged_model_preprocessing_and_threshold_files_are_named(finished, tmp_path):
    from dfd.evaluation import loading

    config, _ = finished
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="is not a Keras model file") as raised:
        loading.load_keras_model(garbage)
    assert "not found" not in str(raised.value).lower()

    run = tmp_path / "run"
    run.mkdir()
    for name in ("preprocessing.json", "threshold.json"):
        (run / name).write_text((Path(config.run_dir) / name).read_text())
    (run / "model.keras").write_bytes((Path(config.run_dir) / "model.keras").read_bytes())
    for name, content, message in [("threshold.json", "{not json", "threshold.json is not a valid threshold file"),
                                   ("threshold.json", '{"method": "val_eer"}', "not a valid threshold file"),
                                   ("threshold.json", '{"threshold": 7}', "not a probability"),
                                   ("preprocessing.json", "[1, 2", "preprocessing.json is not a valid preprocessing")]:
        saved = (run / name).read_text()
        (run / name).write_text(content)
        with pytest.raises(ValueError, match=message):
            loading.load(run)
        (run / name).write_text(saved)
    assert loading.load(run).threshold == 0.4
