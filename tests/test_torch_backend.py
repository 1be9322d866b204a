"""The torch backend (dfd.backend): dfd.train, evaluate, predict and tune with --backend=torch, and .keras files
scored alike on both backends. This process runs TensorFlow; torch runs in subprocesses (one each, tiny data)."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from dfd import backend, models, train_flags
from dfd.evaluation.evaluate import evaluate
from dfd.models import resize
from dfd.predict import predict_command
from dfd.testing import synthetic
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

ROOT = Path(__file__).resolve().parents[1]
TINY = "--conv_filters=4,4\n--kernel_sizes=3\n--frame_dense_units=8\n--lstm_units=4\n--head_units=4\n"
# Every on-device augmentation op, so that all of them run on torch in training.
AUGMENT = ("--augment_crop=0.2\n--augment_color=0.2\n--augment_blur=1\n--augment_noise=0.02\n"
           "--augment_cutout=0.3\n")


def _run(args: list, backend_env: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KERAS_BACKEND", None)
    if backend_env:
        env["KERAS_BACKEND"] = backend_env
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return done


def _scores(run_dir: Path, split: str = "test") -> dict:
    with open(run_dir / "eval" / split / "predictions.csv") as handle:
        return {row["source"]: float(row["score"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # Imbalanced train split (4 real, 6 fake): the run uses class weights.
    return write_fake_dataset(tmp_path_factory.mktemp("torch_data"), num_frames=3, size=16,
                              counts={"train": (4, 6), "val": (2, 2), "test": (3, 3)})


@pytest.fixture(scope="module")
def torch_run(data, tmp_path_factory):
    """dfd.train on the torch backend, chosen inside a flagfile (as a config would)."""
    root = tmp_path_factory.mktemp("torch_run")
    flagfile = root / "torch.flags"
    flagfile.write_text(f"# a config trained on torch\n--backend=torch\n--data={data}\n--run_dir={root / 'run'}\n"
                        f"--model=cnn_lstm\n{TINY}{AUGMENT}--batch_size=4\n--epochs=1\n--patience=0\n--verbose=0\n")
    done = _run(["-m", "dfd.train", f"--flagfile={flagfile}"])
    assert done.returncode == 0, done.stderr
    return root / "run"


def test_dfd_train_trains_on_torch_from_the_same_tfrecords(torch_run):
    summary = json.loads((torch_run / "summary.json").read_text())
    assert summary["backend"] == "torch" and summary["epochs_run"] == 1 and summary["precision"] == "float32"
    assert np.isfinite(summary["last_epoch"]["loss"]) and 0 <= summary["best_val"]["auc"] <= 1
    assert (torch_run / "model.keras").is_file() and (torch_run / "checkpoints" / "best.keras").is_file()
    assert list((torch_run / "tb" / "train").glob("events.out.tfevents.*"))   # TensorBoard scalars on torch
    assert not (torch_run / "backup").exists()


def test_a_torch_trained_model_scores_the_same_on_tensorflow(torch_run, tmp_path):
    """dfd.evaluate --backend=torch on the torch run, and dfd.evaluation.evaluate here (TensorFlow) on a copy."""
    done = _run(["-m", "dfd.evaluate", f"--run_dir={torch_run}", "--backend=torch"])
    assert done.returncode == 0, done.stderr
    copy = shutil.copytree(torch_run, tmp_path / "copy", ignore=shutil.ignore_patterns("eval", "tb"))
    on_tensorflow = evaluate(copy, "test", print_report=False)
    on_torch = json.loads((torch_run / "eval" / "test" / "metrics.json").read_text())
    torch_scores, tensorflow_scores = _scores(torch_run), _scores(copy)
    assert len(torch_scores) == 6 and torch_scores.keys() == tensorflow_scores.keys()
    for source, score in torch_scores.items():
        assert score == pytest.approx(tensorflow_scores[source], abs=1e-4), source
    assert on_torch["at_0.5"]["loss"] == pytest.approx(on_tensorflow["at_0.5"]["loss"], abs=1e-4)
    assert on_torch["at_0.5"]["roc_auc"] == pytest.approx(on_tensorflow["at_0.5"]["roc_auc"], abs=1e-6)


@pytest.fixture(scope="module")
def tensorflow_run(data, tmp_path_factory):
    """A run trained here, on TensorFlow, behind a resize layer (--input_size) and the augmentation layer."""
    root = tmp_path_factory.mktemp("tf_run")
    hparams = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
    config = train_flags.TrainConfig(data=str(data), run_dir=str(root / "run"), model="cnn_lstm", hparams=hparams,
                                     epochs=1, batch_size=4, input_size=14, augment_crop=0.2, patience=0,
                                     verbose=0, precision="float32")
    assert train(config)["backend"] == "tensorflow"
    return root / "run"


def test_a_tensorflow_trained_model_evaluates_and_predicts_the_same_on_torch(tensorflow_run, tmp_path):
    copy = shutil.copytree(tensorflow_run, tmp_path / "copy", ignore=shutil.ignore_patterns("eval", "tb"))
    done = _run(["-m", "dfd.evaluate", f"--run_dir={copy}"], backend_env="torch")   # KERAS_BACKEND works too
    assert done.returncode == 0, done.stderr
    evaluate(tensorflow_run, "test", print_report=False)
    torch_scores, tensorflow_scores = _scores(copy), _scores(tensorflow_run)
    assert len(torch_scores) == 6
    for source, score in torch_scores.items():
        assert score == pytest.approx(tensorflow_scores[source], abs=1e-4), source

    video = synthetic.write_mp4(tmp_path / "clip.mp4", synthetic.moving_clip(3, 6, 24, 32))
    output = tmp_path / "torch.json"
    done = _run(["-m", "dfd.predict", f"--model={tensorflow_run}", "--backend=torch", f"--output={output}",
                 str(video)])
    assert done.returncode == 0, done.stderr
    stdout = io.StringIO()
    assert predict_command(str(tensorflow_run), [str(video)], stdout=stdout) == 0
    on_torch, on_tensorflow = json.loads(output.read_text())[0], json.loads(stdout.getvalue())[0]
    assert on_torch["frames_used"] == on_tensorflow["frames_used"] == 3
    assert on_torch["fake_probability"] == pytest.approx(on_tensorflow["fake_probability"], abs=1e-4)


_TORCH_LAYERS = """
import sys, keras, numpy as np
from dfd import models
from dfd.models import augmentation, resize
assert keras.backend.backend() == "torch"
clips = np.load(sys.argv[1])
seed = models.build_model("cnn_lstm", (16, 64, 64, 3))
frames = keras.ops.convert_to_numpy(resize.FrameResize(7)(clips))
augment = augmentation.ClipAugmentation(flip=True, crop=0.2, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1,
                                        blur=1.0, noise=0.02, cutout=0.3, seed=0)
trained = keras.ops.convert_to_numpy(augment(clips, training=True))
np.savez(sys.argv[2], params=seed.count_params(), frames=frames, trained=trained,
         identity=keras.ops.convert_to_numpy(augment(clips)))
"""


def test_the_seed_model_and_dfds_layers_on_torch(tmp_path):
    """552,609 parameters on torch too (Keras keeps one LSTM bias); FrameResize gives TensorFlow's pixels."""
    clips = np.random.default_rng(0).integers(0, 256, (4, 3, 20, 20, 3), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    done = _run(["-c", _TORCH_LAYERS, str(tmp_path / "clips.npy"), str(tmp_path / "out.npz")], backend_env="torch")
    assert done.returncode == 0, done.stderr
    out = np.load(tmp_path / "out.npz")
    assert int(out["params"]) == models.build_model("cnn_lstm", (16, 64, 64, 3)).count_params() == 552_609
    on_tensorflow = keras.ops.convert_to_numpy(resize.FrameResize(7)(clips))
    # uint8 after rounding: a value at .5 may round either way after float differences.
    assert out["frames"].shape == on_tensorflow.shape and np.abs(out["frames"].astype(int) - on_tensorflow).max() <= 1
    assert out["trained"].dtype == np.uint8 and out["trained"].shape == clips.shape
    assert (out["trained"] != clips).reshape(4, -1).any(axis=1).all()
    np.testing.assert_array_equal(out["identity"], clips)


_TORCH_RESUME = """
import json, sys, keras
from dfd import train_flags
from dfd.testing.callbacks import EpochRecorder
from dfd.training.run import train
assert keras.backend.backend() == "torch"

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt

hparams = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
config = train_flags.TrainConfig(data=sys.argv[1], run_dir=sys.argv[2], hparams=hparams, epochs=2, batch_size=4,
                                 verbose=0, patience=0, precision="mixed_float16", augment_crop=0.2)
try:
    train(config, extra_callbacks=[Kill()])
except KeyboardInterrupt:
    pass
recorder = EpochRecorder()
summary = train(config, extra_callbacks=[recorder])
print(json.dumps({"resumed_at": recorder.epochs, **summary}))
"""


def test_a_killed_torch_run_resumes_in_mixed_precision(data, tmp_path):
    """BackupAndRestore and dfd's own checkpoint files on torch: the re-run trains epoch 2 only."""
    done = _run(["-c", _TORCH_RESUME, str(data), str(tmp_path / "run")], backend_env="torch")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed_at"] == [1] and summary["epochs_run"] == 2
    assert summary["precision"] == "mixed_float16" and summary["backend"] == "torch"
    assert np.isfinite(summary["last_epoch"]["loss"])


def test_dfd_tune_searches_on_torch(data, tmp_path):
    training = tmp_path / "train.flags"
    training.write_text(f"--data={data}\n--run_dir={tmp_path / 'train_run'}\n--model=cnn_lstm\n--batch_size=4\n"
                        "--epochs=1\n--patience=0\n--precision=float32\n--verbose=0\n")
    done = _run(["-m", "dfd.tune", f"--flagfile={training}", f"--run_dir={tmp_path / 'search'}", "--tuner=random",
                 "--max_trials=1", "--max_epochs=1", "--backend=torch"], timeout=600)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "search" / "tuner" / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and (tmp_path / "search" / "best.flags").is_file()


def test_backend_comes_from_argv_flagfiles_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(backend.ENV, raising=False)
    assert backend.requested(["prog"]) == "tensorflow"
    monkeypatch.setenv(backend.ENV, "torch")
    assert backend.requested(["prog", "--data=x"]) == "torch"
    inner = tmp_path / "inner.flags"
    inner.write_text("# --backend=jax in a comment is no flag\n--backend=torch\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"--flagfile={inner}\n--epochs=3\n")
    monkeypatch.setenv(backend.ENV, "tensorflow")
    assert backend.requested(["prog", f"--flagfile={outer}"]) == "torch"
    assert backend.requested(["prog", "--flagfile", str(outer), "--backend=tensorflow"]) == "tensorflow"   # later wins
    assert backend.requested(["prog", "--backend", "torch"]) == "torch"
    with pytest.raises(ValueError, match="not a backend dfd supports: use one of tensorflow, torch"):
        backend.requested(["prog", "--backend=jax"])
    # This process imported Keras on TensorFlow: asking for torch now cannot work, and says so.
    with pytest.raises(ValueError, match="already imported with the tensorflow backend"):
        backend.select(["prog", "--backend=torch"])


def test_a_bad_backend_is_one_line_and_exit_code_2(tmp_path):
    done = _run(["-m", "dfd.train", "--backend=jax", f"--run_dir={tmp_path}"], timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "dfd.train: --backend='jax' is not a backend dfd supports: use one of tensorflow, torch"]


def test_what_torch_cannot_do_is_refused_with_what_to_use(monkeypatch, tmp_path):
    config = train_flags.TrainConfig(data="d", run_dir="r", strategy="mirrored", profile_batch="2")
    backend.check_supported(config)   # TensorFlow does it all
    monkeypatch.setattr(backend, "current", lambda: "torch")
    with pytest.raises(ValueError, match=r"--strategy=mirrored .* --backend=tensorflow.*; --profile_batch"):
        backend.check_supported(config)
    with pytest.raises(ValueError, match="multi_worker"):
        backend.check_supported(train_flags.TrainConfig(data="d", run_dir="r", strategy="multi_worker"))
    with pytest.raises(ValueError, match="--explain: .*GradientTape.*--backend=tensorflow"):
        backend.check_supported(type("EvaluateFlags", (), {"explain": 4})())
    backend.check_supported(train_flags.TrainConfig(data="d", run_dir="r", precision="mixed_float16",
                                                    jit_compile=True, strategy="one_device"))
