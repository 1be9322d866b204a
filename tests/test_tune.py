"""dfd.tune on fake shards: the search space, a 2-trial search through the real flags, resume, HParams
events, best.flags through dfd.train's own flag parsing and trainer, --max_gap, the configs."""

import csv
import json
import shutil
from pathlib import Path

import keras_tuner
import pytest
import tensorflow as tf
from absl import flags
from tensorboard.plugins.hparams import plugin_data_pb2

from dfd import models, train_flags
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train
from dfd.tune import tune
from dfd.tuning import flags as tune_flags
from dfd.tuning import results
from dfd.tuning.objectives import WORST_LOSS, apply_max_gap
from dfd.tuning.search import run_search
from dfd.tuning.search_space import define_search_space

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the search space

def test_default_trial_is_the_seed_cnn_lstm():
    hp = keras_tuner.HyperParameters()
    hparams, learning_rate = define_search_space(hp, "cnn_lstm", {}, (2, 64, 64, 3))
    assert hparams["conv_filters"] == (16, 32, 64) and hparams["kernel_sizes"] == (3, 3, 5)
    assert learning_rate == pytest.approx(1e-3)
    assert models.build_model("cnn_lstm", (2, 64, 64, 3), **hparams).count_params() == 552_609
    searched = {"conv_blocks", "first_filters", "kernel_size_1", "kernel_size_2", "kernel_size_3",
                "feature_pooling", "frame_dense_units", "lstm_units", "head_units", "dropout", "l2", "learning_rate"}
    assert searched == {parameter.name for parameter in hp.space}


def test_fewer_blocks_are_simpler_only_with_global_pooling():
    def params(conv_blocks, feature_pooling):
        hp = keras_tuner.HyperParameters()
        define_search_space(hp, "image_cnn", {}, (64, 64, 3))
        hp.values.update(conv_blocks=conv_blocks, feature_pooling=feature_pooling)
        hparams, _ = define_search_space(hp, "image_cnn", {}, (64, 64, 3))
        return models.build_model("image_cnn", (64, 64, 3), **hparams).count_params()
    # The seed's flatten head: one block leaves a 31x31x16 map, a Dense(256) over 15,376 inputs.
    assert params(1, "flatten") > 5 * params(3, "flatten")
    # Global average pooling: the Dense layer sees 16 channels, so one block is the smallest model.
    assert params(1, "global_average") < params(3, "global_average") < params(3, "flatten")


def test_the_largest_variant_fits_small_frames():
    hp = keras_tuner.HyperParameters()
    define_search_space(hp, "image_cnn", {}, (16, 16, 3))
    blocks = hp.get_config()["space"][0]["config"]
    assert blocks["name"] == "conv_blocks" and blocks["max_value"] == 2   # 3 blocks of 5x5 do not fit 16x16
    hp.values.update(conv_blocks=2, first_filters=32, kernel_size_1=5, kernel_size_2=5, dense_units=32)
    hparams, _ = define_search_space(hp, "image_cnn", {}, (16, 16, 3))
    assert hparams["conv_filters"] == (32, 64) and hparams["kernel_sizes"] == (5, 5)
    assert models.build_model("image_cnn", (16, 16, 3), **hparams).output_shape == (None, 1)


def test_inception_space_builds_and_searches_freezing_only_with_weights():
    hp = keras_tuner.HyperParameters()
    hparams, learning_rate = define_search_space(hp, "inception_v3", {}, (75, 75, 3))
    assert "freeze_backbone" not in hp.values and hparams["head_units"] == 1024
    assert learning_rate == pytest.approx(1e-4)
    assert models.build_model("inception_v3", (75, 75, 3), **hparams).output_shape == (None, 2)
    with_weights = keras_tuner.HyperParameters()
    define_search_space(with_weights, "inception_v3", {"backbone_weights": "weights/notop.h5"}, (75, 75, 3))
    assert with_weights.values["freeze_backbone"] is False   # searched; the seed fine-tuned


def test_hparams_given_as_flags_are_pinned():
    hp = keras_tuner.HyperParameters()
    hparams, _ = define_search_space(hp, "cnn_lstm", {"lstm_units": 8, "conv_filters": "4,8"}, (3, 16, 16, 3))
    assert hparams["lstm_units"] == 8 and hparams["conv_filters"] == "4,8"
    assert not {"lstm_units", "conv_blocks", "first_filters"} & set(hp.values)
    with pytest.raises(ValueError, match="do.* not apply to --model=image_cnn"):
        define_search_space(keras_tuner.HyperParameters(), "image_cnn", {"lstm_units": 8}, (16, 16, 3))


# ---------------------------------------------------------------- a real search

def _parse(argv):
    flag_values = flags.FlagValues()
    tune_flags.define_tune_flags(flag_values)
    flag_values(["dfd.tune", *argv])
    return train_flags.config_from_flags(flag_values), tune_flags.options_from_flags(flag_values)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    data = write_fake_dataset(root / "data", num_frames=3, size=16, counts={"train": (8, 8), "val": (4, 4)})
    training = root / "train.flags"
    training.write_text(f"# a training flagfile\n--data={data}\n--run_dir={root / 'train_run'}\n--model=cnn_lstm\n"
                        "--batch_size=8\n--epochs=1\n--patience=0\n--precision=float32\n--verbose=0\n")
    tune = root / "tune.flags"
    tune.write_text(f"--flagfile={training}\n--run_dir={root / 'run'}\n--tuner=random\n--max_trials=2\n"
                    "--max_epochs=1\n")
    config, options = _parse([f"--flagfile={tune}"])
    return {"root": root, "training": training, "tune": tune, "config": config, "options": options,
            "result": run_search(config, options)}


def _trial_dirs(run_dir) -> set:
    return {path.name for path in (Path(run_dir) / "tuner").glob("trial_*")}


def test_search_runs_the_trials_and_writes_the_table(search):
    run_dir = Path(search["config"].run_dir)
    assert search["config"].data.endswith("data") and search["options"].tuner == "random"
    assert search["result"].builds == 2 and len(_trial_dirs(run_dir)) == 2
    with open(run_dir / "tuner" / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["rank"] for row in rows] == ["1", "2"] and {row["status"] for row in rows} == {"ok"}
    for row in rows:
        assert float(row["params"]) > 0 and row["hp_conv_blocks"] in ("1", "2")
    assert "--tuner=random" in (run_dir / "flags.txt").read_text()


def _hparams_events(directory: Path):
    """(plugin data, scalars) of the event files directly in `directory`."""
    plugin, scalars = [], {}
    for path in directory.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    plugin.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
                elif value.tag.startswith("tune/"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    return plugin, scalars


def test_hparams_dashboard_has_the_space_and_every_trial(search):
    board = Path(search["config"].run_dir) / "tb"
    plugin, _ = _hparams_events(board)
    experiments = [data.experiment for data in plugin if data.HasField("experiment")]
    assert len(experiments) == 1
    assert {"conv_blocks", "lstm_units", "learning_rate"} <= {info.name for info in experiments[0].hparam_infos}
    assert {"tune/val_auc", "tune/auc_gap", "tune/loss_gap", "tune/params"} <= {
        info.name.tag for info in experiments[0].metric_infos}
    trials = sorted(board.glob("trial_*"))
    assert len(trials) == 2
    for trial in trials:
        plugin, scalars = _hparams_events(trial)
        sessions = [data.session_start_info for data in plugin if data.HasField("session_start_info")]
        assert len(sessions) == 1 and "conv_blocks" in sessions[0].hparams
        assert 0 <= scalars["tune/val_auc"] <= 1 and scalars["tune/params"] > 0 and "tune/auc_gap" in scalars
        assert list(trial.glob("execution0/validation/events.out.tfevents.*"))   # Keras's epoch curves


def test_best_flags_retrain_through_the_trainer(search, tmp_path):
    result = search["result"]
    best_flags = Path(search["config"].run_dir) / "best.flags"
    assert result.best_flags == best_flags
    flag_values = flags.FlagValues()
    train_flags.define_all_flags(flag_values)   # dfd.train's flags only: best.flags must not need tune flags
    flag_values(["dfd.train", f"--flagfile={search['training']}", f"--flagfile={best_flags}"])
    config = train_flags.config_from_flags(flag_values)
    as_flags = {name: ",".join(map(str, value)) if isinstance(value, tuple) else value
                for name, value in result.best_config.hparams.items()}   # flags hand tuples over as "16,32"
    assert config.hparams == as_flags and config.hparams["lstm_units"] in (16, 32, 64)
    assert config.learning_rate == result.best_config.learning_rate
    assert config.run_dir == str(Path(search["config"].run_dir) / "best") and config.epochs == 1
    flag_values(["dfd.train", f"--run_dir={tmp_path / 'best'}", "--batch_size=16"])   # one step
    summary = train(train_flags.config_from_flags(flag_values))
    assert summary["epochs_run"] == 1 and (tmp_path / "best" / "model.keras").is_file()


def test_rerun_resumes_without_repeating_finished_trials(search, tmp_path):
    config, options = search["config"], search["options"]
    again = run_search(config, options)   # the same command again
    assert again.builds == 0 and len(_trial_dirs(config.run_dir)) == 2
    assert [row["trial_id"] for row in again.rows] == [row["trial_id"] for row in search["result"].rows]

    copy = tmp_path / "run"
    shutil.copytree(config.run_dir, copy)
    more = run_search(*_parse([f"--flagfile={search['tune']}", f"--run_dir={copy}", "--max_trials=3"]))
    assert more.builds == 1 and len(_trial_dirs(copy)) == 3   # only the new third trial ran
    config_copy, options_copy = _parse([f"--flagfile={search['tune']}", f"--run_dir={copy}", "--max_trials=3",
                                        "--retrain_best"])
    tune(config_copy, options_copy)   # nothing left to search: straight to the full-length retraining
    assert json.loads((copy / "best" / "summary.json").read_text())["epochs_run"] == 1
    assert len(_trial_dirs(copy)) == 3
    with pytest.raises(ValueError, match="other settings .*objective"):
        run_search(*_parse([f"--flagfile={search['tune']}", f"--run_dir={copy}", "--objective=val_loss"]))
    fresh = run_search(*_parse([f"--flagfile={search['tune']}", f"--run_dir={copy}", "--max_trials=1",
                                "--objective=val_loss", "--overwrite"]))
    assert fresh.builds == 1 and len(_trial_dirs(copy)) == 1 and not (copy / "best").exists()
    assert json.loads((copy / "tuner" / "search.json").read_text())["objective"] == "val_loss"


def test_a_killed_search_reruns_only_the_interrupted_trial(search, tmp_path, monkeypatch):
    from dfd.tuning.hypermodel import DfdHyperModel
    fit = DfdHyperModel.fit
    calls = []

    def fit_killed_in_trial_2(self, hp, model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill during trial 2")
        return fit(self, hp, model, *args, **kwargs)

    argv = [f"--flagfile={search['tune']}", f"--run_dir={tmp_path / 'run'}"]
    monkeypatch.setattr(DfdHyperModel, "fit", fit_killed_in_trial_2)
    with pytest.raises(KeyboardInterrupt):
        run_search(*_parse(argv))
    monkeypatch.setattr(DfdHyperModel, "fit", fit)
    resumed = run_search(*_parse(argv))   # the same command again
    assert resumed.builds == 1 and len(_trial_dirs(tmp_path / "run")) == 2
    assert [row["status"] for row in resumed.rows] == ["ok", "ok"]


# ---------------------------------------------------------------- --max_gap

def _trial(trial_id, **metrics):
    trial = keras_tuner.engine.trial.Trial(hyperparameters=keras_tuner.HyperParameters(), trial_id=trial_id,
                                           status="COMPLETED")
    for name, value in metrics.items():
        trial.metrics.register(name)
        trial.metrics.update(name, value)
    return trial


def test_max_gap_rejects_overfitting_trials_from_best():
    measured = {"val_auc": 0.97, "val_loss": 0.2, "auc_gap": 0.02, "loss_gap": 0.1, "params": 10.0}
    assert apply_max_gap(measured, "val_auc", None)["rejected"] == 0
    assert apply_max_gap(measured, "val_auc", 0.05) == {**measured, "rejected": 0.0}
    overfit = {**measured, "val_auc": 0.99, "auc_gap": 0.2}
    rejected = apply_max_gap(overfit, "val_auc", 0.05)
    assert rejected["val_auc"] == 0.0 and rejected["measured_val_auc"] == 0.99 and rejected["rejected"] == 1
    assert apply_max_gap(overfit, "val_loss", 0.05)["val_loss"] == WORST_LOSS   # worst for a minimized objective

    trials = [_trial("0", **apply_max_gap(overfit, "val_auc", 0.05)),
              _trial("1", **apply_max_gap(measured, "val_auc", 0.05)),
              _trial("2", **apply_max_gap({**measured, "val_auc": 0.9}, "val_auc", 0.05))]
    rows = results.ranked_rows(trials, "val_auc")
    assert [(row["trial_id"], row["status"], row["rank"]) for row in rows] == [
        ("1", "ok", 1), ("2", "ok", 2), ("0", "rejected", None)]
    assert rows[-1]["val_auc"] == 0.99   # the table shows what was measured
    assert "rejected" in results.format_table(rows)


# ---------------------------------------------------------------- flags and configs

@pytest.mark.parametrize("name, data, model, tuner", [
    ("tune_video", "tfrecords/video", "cnn_lstm", "hyperband"),
    ("tune_image", "tfrecords/images", "image_cnn", "hyperband"),
    ("tune_demo", "tfrecords/demo/videos", "cnn_lstm", "random")])
def test_tune_configs_include_the_training_flagfile(monkeypatch, name, data, model, tuner):
    monkeypatch.chdir(REPO)   # nested --flagfile paths are relative to the working directory
    path = REPO / "configs" / f"{name}.flags"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and f"python -m dfd.tune --flagfile=configs/{name}.flags" in path.read_text()
    assert all(line.startswith(("#", "--")) for line in lines if line)   # whole-line comments only
    config, options = _parse([f"--flagfile={path}"])
    assert (config.data, config.model, config.run_dir) == (data, model, f"runs/{name}")
    assert options.tuner == tuner and options.max_gap == 0.05


def test_bad_tune_flags_say_what_to_do():
    with pytest.raises(ValueError, match="--max_gap must be >= 0"):
        tune_flags.TuneOptions(max_gap=-0.1)
    with pytest.raises(ValueError, match="--max_trials must be >= 1 for the random tuner"):
        tune_flags.TuneOptions(tuner="random", max_trials=0)


def test_progress_counts_hyperbands_schedule_capped_by_max_trials():
    from dfd.tuning.tuners import scheduled_trials
    oracle = keras_tuner.oracles.HyperbandOracle(keras_tuner.Objective("val_auc", "max"), max_epochs=20, factor=3)
    assert scheduled_trials(oracle) == 30   # brackets of 12+4+2, 6+2 and 4 trials (configs/tune_video.flags)
    oracle.max_trials = 10
    assert scheduled_trials(oracle) == 10


@pytest.mark.parametrize("name, shape", [("efficientnet_b0", (32, 32, 3)), ("efficientnet_b0_video", (2, 32, 32, 3))])
def test_backbone_model_spaces_build(name, shape):
    hp = keras_tuner.HyperParameters()
    hparams, learning_rate = define_search_space(hp, name, {}, shape)
    assert "freeze_backbone" not in hp.values and learning_rate == pytest.approx(1e-4)
    if name.endswith("_video"):
        assert hparams["temporal"] == "lstm" and hparams["lstm_units"] == 64
        mean = keras_tuner.HyperParameters()
        mean.values["temporal"] = "mean"
        mean_hparams, _ = define_search_space(mean, name, {}, shape)
        assert mean_hparams["temporal"] == "mean" and "lstm_units" not in mean_hparams
        pinned, _ = define_search_space(keras_tuner.HyperParameters(), name, {"temporal": "mean"}, shape)
        assert "lstm_units" not in pinned
    assert models.build_model(name, shape, **hparams).output_shape == (None, 1)
    with_weights = keras_tuner.HyperParameters()
    define_search_space(with_weights, name, {"backbone_weights": "imagenet"}, shape)
    assert with_weights.values["freeze_backbone"] is False
