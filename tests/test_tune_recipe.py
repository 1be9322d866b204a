"""dfd.tune over the training recipe: model, frame size (--input_size, an on-device resize), augmentation
strength, pseudo-fake fraction. The space, the trial configs, a real 2-trial search whose best.flags
retrains through dfd.train, and a resized run through evaluate, predict and export."""

from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from dfd import models, train_flags
from dfd.data import pipeline
from dfd.evaluation import evaluate, export, loading, predict
from dfd.models import augmentation
from dfd.models.resize import FrameResize
from dfd.testing import synthetic
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training import model as training_model
from dfd.training.run import train
from dfd.tuning import flags as tune_flags
from dfd.tuning.search import run_search
from dfd.tuning.search_space import define_search_space, define_trial, make_recipe

IMAGE_TINY = {"conv_filters": "4", "kernel_sizes": "3", "dense_units": 4}


def _config(**overrides):
    values = dict(data="unused", run_dir="unused", model="image_cnn", epochs=1, batch_size=8, verbose=0)
    values.update(overrides)
    return train_flags.TrainConfig(**values)


def _names(hp) -> set:
    return {parameter.name for parameter in hp.space}


# ---------------------------------------------------------------- the space

def test_the_recipe_is_searched_only_when_asked():
    plain = _config()
    recipe = make_recipe(plain, (32, 32, 3))
    assert recipe.identity() == {} and recipe.fields == ("model",)
    hp, reference = keras_tuner.HyperParameters(), keras_tuner.HyperParameters()
    trial = define_trial(hp, plain, (32, 32, 3), recipe)
    hparams, learning_rate = define_search_space(reference, "image_cnn", {}, (32, 32, 3))
    assert _names(hp) == _names(reference) and trial.hparams == hparams and trial.learning_rate == learning_rate
    assert (trial.model, trial.input_size, trial.pseudo_fake_fraction) == ("image_cnn", 0, 0.5)

    recipe = make_recipe(_config(augment_crop=0.2, augment_blur=1.0, pseudo_fakes="sbi"), (48, 48, 3),
                         model_names=("image_cnn", "efficientnet_b0"), input_sizes=(48, 32))
    assert recipe.input_sizes == (32, 48) and recipe.augment_strengths == (0.0, 0.5, 1.0, 1.5)
    assert recipe.pseudo_fake_fractions == (0.25, 0.5, 0.75)
    hp = keras_tuner.HyperParameters()
    define_trial(hp, _config(augment_crop=0.2, augment_blur=1.0, pseudo_fakes="sbi"), (48, 48, 3), recipe)
    names = _names(hp)
    assert {"model", "input_size", "augment_strength", "pseudo_fake_fraction", "image_cnn/conv_blocks",
            "image_cnn/learning_rate", "efficientnet_b0/dropout", "efficientnet_b0/learning_rate"} <= names
    assert "dropout" not in names   # each model's hparams live under its own name scope


def test_a_trial_config_carries_the_recipe_values():
    config = _config(augment_crop=0.2, augment_blur=1.0, augment_cutout=0.3, pseudo_fakes="sbi",
                     train_classes="real", hparams={"dropout": 0.1})
    recipe = make_recipe(config, (48, 48, 3), model_names=("image_cnn", "efficientnet_b0"), input_sizes=(32, 48))
    hp = keras_tuner.HyperParameters()
    define_trial(hp, config, (48, 48, 3), recipe)
    hp.values.update({"model": "efficientnet_b0", "input_size": 48, "augment_strength": 1.5,
                      "pseudo_fake_fraction": 0.75, "efficientnet_b0/learning_rate": 3e-4})
    trial = define_trial(hp, config, (48, 48, 3), recipe)
    assert trial.model == "efficientnet_b0" and trial.input_size == 48 and trial.pseudo_fake_fraction == 0.75
    assert (trial.augment_crop, trial.augment_blur, trial.augment_cutout) == (0.3, 1.5, 0.45)
    assert trial.hparams == {"dropout": 0.1} and trial.learning_rate == 3e-4   # the pinned dropout reaches it
    # The image_cnn scope is inactive for this trial: its values are not recorded.
    assert not [name for name in hp.values if name.startswith("image_cnn/") and hp.is_active(name)]

    hp.values.update({"model": "image_cnn", "input_size": 32, "augment_strength": 0.0})
    trial = define_trial(hp, config, (48, 48, 3), recipe)
    assert trial.model == "image_cnn" and trial.input_size == 32 and trial.augment_crop == 0.0
    assert trial.hparams["dropout"] == 0.1 and "conv_filters" in trial.hparams
    built = models.build_model("image_cnn", (32, 32, 3), **trial.hparams)   # the conv stack fits 32x32
    assert built.output_shape == (None, 1)
    # A strength taking --augment_cutout=0.7 to 1.05 is left out.
    assert make_recipe(_config(augment_cutout=0.7), (32, 32, 3)).augment_strengths == (0.0, 0.5, 1.0)


def test_recipe_settings_that_cannot_work_say_what_to_do():
    with pytest.raises(ValueError, match="cnn_lstm is not a image model"):
        make_recipe(_config(), (32, 32, 3), model_names=("image_cnn", "cnn_lstm"))
    with pytest.raises(ValueError, match="at most|between 1 and the data's frame size 32"):
        make_recipe(_config(), (32, 32, 3), input_sizes=(24, 48))
    with pytest.raises(ValueError, match="xception needs frames of at least 71"):
        make_recipe(_config(), (2, 96, 96, 3), model_names=("image_cnn", "xception"), input_sizes=(64, 96))
    with pytest.raises(ValueError, match="pseudo_fake_fraction"):
        make_recipe(_config(pseudo_fakes="sbi"), (32, 32, 3), pseudo_fake_fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match="search_input_sizes must be a comma-separated list of int"):
        tune_flags.TuneOptions(search_input_sizes=("64", "big"))


# ---------------------------------------------------------------- --input_size: the resize layer

def test_frame_resize_keeps_uint8_and_saves_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    inner = models.build_model("image_cnn", (8, 8, 3), **{"conv_filters": (4,), "kernel_sizes": (3,),
                                                          "dense_units": 4})
    model = augmentation.wrap(inner, augmentation.DeviceAugment(flip=True), seed=0, input_shape=(16, 16, 3))
    assert model.input_shape == (None, 16, 16, 3) and augmentation.unwrap(model) is inner
    assert model.count_params() == inner.count_params()
    flat = np.full((2, 16, 16, 3), 77, np.uint8)   # a constant frame stays that constant at any size
    resized = FrameResize(8)(flat)
    assert resized.dtype == tf.uint8 and resized.shape == (2, 8, 8, 3) and np.all(resized.numpy() == 77)
    clips = FrameResize(6)(np.zeros((2, 3, 16, 12, 3), np.uint8))   # clips, frames not square
    assert clips.shape == (2, 3, 6, 6, 3)
    np.testing.assert_allclose(model(flat).numpy(), inner(resized).numpy(), atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded(flat).numpy(), model(flat).numpy(), atol=1e-6)
    jit = tf.function(lambda x: loaded(x), jit_compile=True)   # --jit_compile must keep working
    np.testing.assert_allclose(jit(flat).numpy(), model(flat).numpy(), atol=1e-5)


def test_a_resized_run_goes_through_evaluate_predict_and_export(tmp_path):
    data = write_fake_dataset(tmp_path / "data", num_frames=2, size=16,
                              counts={"train": (8, 8), "val": (4, 4), "test": (2, 2)})
    config = _config(data=str(data), run_dir=str(tmp_path / "run"), hparams=dict(IMAGE_TINY), input_size=8,
                     batch_size=16, precision="float32", patience=0, augment_crop=0.1)
    train(config)
    loaded = loading.load(tmp_path / "run")
    assert loaded.input_shape == (16, 16, 3)   # the data's frames; the model inside sees 8x8
    assert augmentation.unwrap(loaded.model).input_shape == (None, 8, 8, 3)
    assert "--input_size=8" in (tmp_path / "run" / "flags.txt").read_text()
    result = evaluate.evaluate(tmp_path / "run", split="test", print_report=False)
    assert result["at_0.5"]["count"] == 4 and 0 <= result["at_0.5"]["roc_auc"] <= 1
    clip = tmp_path / "clip.mp4"
    synthetic.write_mp4(clip, synthetic.moving_clip(1, 12, 24, 32))
    scored = predict.predict_files(loaded, [str(clip)], progress=None)
    assert scored[0].error is None and 0 <= scored[0].fake_probability <= 1
    assert export.export(tmp_path / "run", tmp_path / "export", verbose=False) <= export.MAX_ABS_DIFFERENCE
    # The same command resumes: --input_size is part of the run, a finished run is left as it is.
    assert train(config)["epochs_run"] == 1


# ---------------------------------------------------------------- a real search over the recipe

def _parse(argv, define=tune_flags.define_tune_flags):
    flag_values = flags.FlagValues()
    define(flag_values)
    flag_values(["dfd", *argv])
    return flag_values


def test_a_search_over_models_input_sizes_and_pseudo_fakes_retrains_its_best(tmp_path, monkeypatch):
    data = write_fake_dataset(tmp_path / "data", num_frames=2, size=40, counts={"train": (8, 8), "val": (4, 4)})
    training = tmp_path / "train.flags"
    training.write_text(f"--data={data}\n--run_dir={tmp_path / 'train_run'}\n--model=image_cnn\n--batch_size=8\n"
                        "--epochs=1\n--patience=0\n--precision=float32\n--verbose=0\n--pseudo_fakes=sbi\n"
                        "--train_classes=real\n--augment_crop=0.1\n")
    argv = [f"--flagfile={training}", f"--run_dir={tmp_path / 'tune'}", "--tuner=random", "--max_trials=2",
            "--max_epochs=1", "--search_models=image_cnn,efficientnet_b0", "--search_input_sizes=32,40"]
    built_train_sets, trials = [], []
    make_train_dataset, build_and_compile = pipeline.make_train_dataset, training_model.build_and_compile

    def spy_dataset(meta, **kwargs):
        built_train_sets.append(kwargs["pseudo_fakes"].fraction)
        return make_train_dataset(meta, **kwargs)

    def spy_build(config, input_shape, hparams):
        trials.append(config)
        return build_and_compile(config, input_shape, hparams)

    monkeypatch.setattr(pipeline, "make_train_dataset", spy_dataset)
    monkeypatch.setattr(training_model, "build_and_compile", spy_build)
    flag_values = _parse(argv)
    result = run_search(train_flags.config_from_flags(flag_values), tune_flags.options_from_flags(flag_values))

    assert result.builds == 2 and [row["status"] for row in result.rows] == ["ok", "ok"]
    for trial, row in zip(trials, sorted(result.rows, key=lambda row: row["trial_id"]), strict=True):
        assert trial.model == row["hp_model"] in ("image_cnn", "efficientnet_b0")
        assert trial.input_size == row["hp_input_size"] in (32, 40)
        assert trial.pseudo_fake_fraction == row["hp_pseudo_fake_fraction"] in (0.25, 0.5, 0.75)
        assert trial.augment_crop == pytest.approx(0.1 * row["hp_augment_strength"])
    # One training set per fraction (the flagfile's 0.5 first), each built once.
    assert built_train_sets[0] == 0.5 and len(built_train_sets) == len(set(built_train_sets))
    assert {trial.pseudo_fake_fraction for trial in trials} <= set(built_train_sets)

    best = result.best_config
    text = result.best_flags.read_text()
    for line in (f"--model={best.model}", f"--input_size={best.input_size}",
                 f"--pseudo_fake_fraction={best.pseudo_fake_fraction}", f"--augment_crop={best.augment_crop}"):
        assert line in text.splitlines()
    trainer_flags = _parse([f"--flagfile={training}", f"--flagfile={result.best_flags}",
                            f"--run_dir={tmp_path / 'best'}"], train_flags.define_all_flags)
    config = train_flags.config_from_flags(trainer_flags)
    assert (config.model, config.input_size, config.pseudo_fake_fraction, config.augment_crop) == (
        best.model, best.input_size, best.pseudo_fake_fraction, best.augment_crop)
    assert config.learning_rate == best.learning_rate
    summary = train(config)
    assert summary["epochs_run"] == 1 and (Path(tmp_path / "best") / "model.keras").is_file()
