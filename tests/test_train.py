"""The real trainer entry (dfd.train.train) on fake shards: run layout, learning, resume, NaN, precision."""

import json

import keras
import numpy as np
import pytest

from dfd import models, train_flags
from dfd.data import pipeline
from dfd.models import augmentation
from dfd.run_layout import RunLayout
from dfd.testing.callbacks import EpochRecorder
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.callbacks import NaNLossError
from dfd.training.run import train

# A small cnn_lstm so a step costs milliseconds on CPU.
TINY = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("clips"), num_frames=3, size=16,
                              counts={"train": (8, 8), "val": (4, 4)})


def _config(data, run_dir, **overrides):
    values = dict(data=str(data), run_dir=str(run_dir), model="cnn_lstm", hparams=dict(TINY), epochs=1,
                  batch_size=8, learning_rate=0.01, verbose=0, patience=0, precision="float32")
    values.update(overrides)
    return train_flags.TrainConfig(**values)


class _KillAfterFirstEpoch(keras.callbacks.Callback):
    """Stands in for a kill: raises once epoch 1 (and its backup) is complete."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill after epoch 1")


class _PoisonWeightsAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            for weight in self.model.trainable_weights:   # max-pooling may swallow a single NaN
                weight.assign(np.full(weight.shape, np.nan, weight.dtype))


@pytest.fixture(scope="module")
def one_step_run(clips, tmp_path_factory):
    config = _config(clips, tmp_path_factory.mktemp("one_step") / "run", batch_size=16)  # 16 clips: one step
    return config, train(config)


def test_one_step_writes_every_file_of_the_run_dir(clips, one_step_run):
    config, summary = one_step_run
    run = RunLayout(config.run_dir)
    for path in (run.flags, run.data_metadata, run.preprocessing, run.best_model, run.final_model,
                 run.history, run.summary):
        assert path.is_file(), path
    assert list(run.tensorboard.rglob("events.out.tfevents.*"))
    assert not run.backup.exists()   # a completed run leaves no backup to resume from
    history = json.loads(run.history.read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1] and "val_auc" in history[0]
    assert summary["best_epoch"] == 1 and json.loads(run.summary.read_text())["num_train"] == 16
    copied = json.loads(run.data_metadata.read_text())
    assert copied.pop("directory") == str(clips.resolve())
    assert copied == json.loads((clips / "metadata.json").read_text())
    reloaded = keras.saving.load_model(run.final_model, safe_mode=True)
    assert reloaded.input_shape == (None, 3, 16, 16, 3)


def test_evaluate_finds_relative_training_data_from_another_directory(clips, tmp_path, monkeypatch):
    """--data as typed is relative to where training ran; dfd.evaluate --run_dir works from anywhere."""
    from dfd.evaluation import evaluate

    monkeypatch.chdir(clips.parent)
    config = _config(clips.name, tmp_path / "run", batch_size=16)
    train(config)
    assert f"--data={clips.name}" in RunLayout(config.run_dir).flags.read_text()
    monkeypatch.chdir(tmp_path)
    result = evaluate.evaluate(config.run_dir, split="val", print_report=False)
    assert result["at_0.5"]["count"] == 8


def test_flags_txt_reruns_the_same_training(one_step_run):
    from absl import flags
    config, _ = one_step_run
    run = RunLayout(config.run_dir)
    flag_values = flags.FlagValues()
    train_flags.define_all_flags(flag_values)
    flag_values(["dfd.train", f"--flagfile={run.flags}"])
    reparsed = train_flags.config_from_flags(flag_values)
    assert reparsed.hparams == config.hparams
    assert reparsed == train_flags.TrainConfig(**{**config.__dict__, "hparams": reparsed.hparams})


def test_seed_shaped_cnn_lstm_learns_a_tiny_set(tmp_path):
    # The seed's default shapes at its 64x64 frames (flatten 1,600), few frames to stay fast.
    data = write_fake_dataset(tmp_path / "data", num_frames=2, size=64, counts={"train": (16, 16), "val": (8, 8)})
    summary = train(_config(data, tmp_path / "run", hparams={}, epochs=4, learning_rate=1e-3,
                            augment_brightness=0.0, augment_contrast=0.0))
    history = json.loads(RunLayout(tmp_path / "run").history.read_text())["epochs"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert summary["best_val"]["auc"] > 0.9   # chance is 0.5


def test_a_killed_run_resumes_at_epoch_2(clips, tmp_path):
    config = _config(clips, tmp_path / "run", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[_KillAfterFirstEpoch()])
    assert RunLayout(config.run_dir).backup.exists()
    recorder = EpochRecorder()
    summary = train(config, extra_callbacks=[recorder])   # the same command again
    assert recorder.epochs == [1, 2]                      # 0-based: epochs 2 and 3
    history = json.loads(RunLayout(config.run_dir).history.read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert summary["epochs_run"] == 3


def test_nan_loss_stops_with_an_error_and_keeps_the_backup(clips, tmp_path):
    config = _config(clips, tmp_path / "run", epochs=3)
    with pytest.raises(NaNLossError, match="epoch 2, batch 1"):
        train(config, extra_callbacks=[_PoisonWeightsAfterFirstEpoch()])
    run = RunLayout(config.run_dir)
    assert run.backup.exists() and any(run.backup.rglob("*"))
    assert not run.final_model.exists()


def test_mixed_precision_outputs_float32(clips, tmp_path):
    run = RunLayout(tmp_path / "run")
    summary = train(_config(clips, run.root, precision="mixed_float16"))
    assert summary["precision"] == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"   # the global policy is restored
    model = keras.saving.load_model(run.final_model, compile=False)
    dataset, _ = pipeline.make_eval_dataset(pipeline.open_dataset(clips), "val", batch_size=4)
    batch, _ = next(iter(dataset))
    outputs = model(batch)
    # The head inside the on-device augmentation wrapper (the flip is on by default).
    assert augmentation.unwrap(model).layers[-1].dtype_policy.compute_dtype == "float32"
    assert outputs.dtype == "float32" and np.isfinite(models.fake_probability(outputs.numpy())).all()


def test_wrong_model_kind_for_the_data_is_a_clear_error(clips, tmp_path):
    images = write_fake_dataset(tmp_path / "images", kind="image", size=16, counts={"train": (4, 4), "val": (2, 2)})
    with pytest.raises(ValueError, match="video model but .* holds image records"):
        train(_config(images, tmp_path / "run"))
    with pytest.raises(ValueError, match="frames_per_clip applies to an image model on video records"):
        train(_config(clips, tmp_path / "run", frames_per_clip=2))
    with pytest.raises(ValueError, match="multiple of --frames_per_clip=3"):
        train(_config(clips, tmp_path / "run", model="image_cnn", hparams=dict(IMAGE_TINY), frames_per_clip=3))


# A small image_cnn for frame-level training on the 16x16 clips.
IMAGE_TINY = {"conv_filters": "4,4", "kernel_sizes": "3", "dense_units": 8}


def test_frame_level_training_of_an_image_model_on_video_records(clips, tmp_path):
    """frames_per_clip=2: 16 clips x 2 frames = 32 frames per epoch = 4 steps of 8; validated on all frames."""
    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    config = _config(clips, tmp_path / "run", model="image_cnn", hparams=dict(IMAGE_TINY), frames_per_clip=2,
                     augment_crop=0.1, augment_color=0.1)
    summary = train(config, extra_callbacks=[CountSteps()])
    assert len(steps) == 16 * 2 // 8
    assert "auc" in summary["best_val"]
    run = RunLayout(config.run_dir)
    model = keras.saving.load_model(run.best_model, safe_mode=True)
    assert model.input_shape == (None, 16, 16, 3)
    assert "--frames_per_clip=2" in run.flags.read_text()


def test_an_image_model_on_video_records_defaults_to_one_frame_per_clip(clips, tmp_path):
    steps = []

    class CountSteps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    train(_config(clips, tmp_path / "run", model="image_cnn", hparams=dict(IMAGE_TINY)),
          extra_callbacks=[CountSteps()])
    assert len(steps) == 16 // 8


def test_class_weights_only_for_an_imbalanced_train_split(tmp_path):
    from dfd.data.metadata import DatasetMetadata
    from dfd.training.setup import class_weights
    balanced = DatasetMetadata.load(write_fake_dataset(tmp_path / "a", counts={"train": (4, 4)}))
    assert class_weights(balanced, threshold=1.2) is None
    skewed = DatasetMetadata.load(write_fake_dataset(tmp_path / "b", counts={"train": (2, 6)}))
    assert class_weights(skewed, threshold=1.2) == {0: 2.0, 1: 8 / 12}
    one_class = DatasetMetadata.load(write_fake_dataset(tmp_path / "c", counts={"train": (4, 0)}))
    with pytest.raises(ValueError, match="only one class"):
        class_weights(one_class, threshold=1.2)
