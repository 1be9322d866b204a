"""Flag parsing shared by dfd.train and dfd.tune: flagfiles, overrides, model hparam flags, configs/."""

import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from dfd import cli, models, train_flags

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _parse(*argv):
    flag_values = flags.FlagValues()
    train_flags.define_all_flags(flag_values)
    flag_values(["dfd.train", *argv])
    return train_flags.config_from_flags(flag_values)


def test_flagfile_then_command_line_overrides(tmp_path):
    flagfile = tmp_path / "x.flags"
    flagfile.write_text("# a whole-line comment\n--data=tfrecords/a\n--run_dir=runs/a\n--epochs=7\n"
                        "--batch_size=16\n--lstm_units=32\n--nofreeze_frame_cnn\n")
    config = _parse(f"--flagfile={flagfile}", "--epochs=2", "--conv_filters=8,16")
    assert (config.data, config.epochs, config.batch_size) == ("tfrecords/a", 2, 16)
    assert config.hparams == {"lstm_units": 32, "freeze_frame_cnn": False, "conv_filters": "8,16"}


def test_hparam_flags_come_from_the_models_and_default_to_the_model():
    for model in models.MODEL_NAMES:
        for name in models.default_hparams(model):
            assert name in train_flags.hparam_names()
    config = _parse("--data=d", "--run_dir=r", "--model=image_cnn")
    assert config.hparams == {}   # unset: build_model uses the model's own defaults


def test_hparam_of_another_model_is_an_error():
    with pytest.raises(ValueError, match="--freeze_backbone do\\(es\\) not apply to --model=cnn_lstm"):
        _parse("--data=d", "--run_dir=r", "--model=cnn_lstm", "--freeze_backbone")


def test_missing_data_or_run_dir_is_an_error():
    with pytest.raises(ValueError, match="--data is required"):
        _parse("--run_dir=r")
    with pytest.raises(ValueError, match="--run_dir is required"):
        _parse("--data=d")


# Training configs; the tune_*.flags files are dfd.tune's and are checked in tests/test_tune.py.
# Training flagfiles; tune_*.flags have their own test, *.convert.flags are make_tfrecords flagfiles.
CONFIG_NAMES = sorted(path.stem for path in CONFIGS.glob("*.flags")
                      if not path.stem.startswith("tune_") and not path.stem.endswith(".convert"))
CONVERT_CONFIGS = sorted(CONFIGS.glob("*.convert.flags"))


def test_the_configs_named_by_issue_3_exist():
    assert {"image", "image64", "inception", "video", "video_frozen_cnn", "demo"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_parses_and_opens_with_its_command(name):
    path = CONFIGS / f"{name}.flags"
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#")
    assert f"python -m dfd.train --flagfile=configs/{name}.flags" in path.read_text()
    # absl treats only whole lines starting with # as comments: no trailing comments on flag lines.
    assert all("#" not in line for line in lines if line.startswith("--"))
    config = _parse(f"--flagfile={path}")
    assert config.model in models.MODEL_NAMES and config.run_dir == f"runs/{name}"


def test_every_conversion_flagfile_parses_and_opens_with_its_command(tmp_path):
    """configs/*.convert.flags are make_tfrecords flagfiles: absl parses them, and the run then stops
    at the missing --source (a user error), not at an unknown or malformed flag."""
    assert {"faces_video.convert", "faces_image.convert"} <= {path.name[:-len(".flags")] for path in CONVERT_CONFIGS}
    for path in CONVERT_CONFIGS:
        text = path.read_text()
        assert text.startswith("#") and f"--flagfile=configs/{path.name}" in text
        assert all("#" not in line for line in text.splitlines() if line.startswith("--"))
        result = subprocess.run([sys.executable, "tools/make_tfrecords.py", f"--flagfile={path}",
                                 f"--source={tmp_path / 'missing'}", f"--output={tmp_path / 'out'}"],
                                cwd=CONFIGS.parent, capture_output=True, text=True, timeout=120)
        assert result.returncode == cli.USER_ERROR_EXIT and "is not a folder" in result.stderr, result.stderr


def test_two_stage_configs_chain_image64_then_video_frozen_cnn(tmp_path):
    """configs/image64.flags trains the frame CNN that configs/video_frozen_cnn.flags loads frozen."""
    import keras
    import numpy as np

    from dfd.models import augmentation
    from dfd.testing.fake_shards import write_fake_dataset
    from dfd.training.run import train

    images = write_fake_dataset(tmp_path / "images64", kind="image", size=64, counts={"train": (8, 8), "val": (2, 2)})
    clips = write_fake_dataset(tmp_path / "video", num_frames=2, size=64, counts={"train": (8, 8), "val": (2, 2)})
    quick = ["--epochs=1", "--batch_size=16", "--verbose=0"]
    stage1 = _parse(f"--flagfile={CONFIGS / 'image64.flags'}", f"--data={images}",
                    f"--run_dir={tmp_path / 'image64'}", *quick)
    train(stage1)
    stage2 = _parse(f"--flagfile={CONFIGS / 'video_frozen_cnn.flags'}", f"--data={clips}",
                    f"--run_dir={tmp_path / 'video_frozen_cnn'}", f"--frame_cnn={tmp_path / 'image64'}", *quick)
    assert stage2.hparams["freeze_frame_cnn"] is True
    train(stage2)
    image_model = keras.saving.load_model(tmp_path / "image64" / "model.keras")
    video_model = keras.saving.load_model(tmp_path / "video_frozen_cnn" / "model.keras")
    # Both runs saved their model behind the on-device augmentation layer (flip on by default).
    frame_cnn = augmentation.unwrap(video_model).get_layer("frame_cnn")
    assert not frame_cnn.trainable
    # Frozen: one epoch of stage 2 left the image CNN's feature weights as stage 1 saved them.
    image_weights = [weight.numpy() for weight in image_model.weights]
    for weight in frame_cnn.weights:
        assert any(w.shape == weight.shape and np.array_equal(w, weight.numpy()) for w in image_weights)


def test_old_inception_weights_flag_means_backbone_weights(tmp_path):
    config = _parse("--data=d", "--run_dir=r", "--model=inception_v3", "--inception_weights=weights/")
    assert config.hparams == {"backbone_weights": "weights/"}
    # An old run's flags.txt keeps working as a flagfile.
    old = tmp_path / "flags.txt"
    old.write_text("--data=d\n--run_dir=r\n--model=inception_v3\n--inception_weights=none\n--nofreeze_backbone\n")
    assert _parse(f"--flagfile={old}").hparams == {"backbone_weights": "none", "freeze_backbone": False}


def test_warmup_flags_reach_the_config_and_the_flagfile():
    config = _parse("--data=d", "--run_dir=r", "--model=efficientnet_b0", "--epochs=5", "--warmup_epochs=2",
                    "--learning_rate=0.01")
    assert (config.warmup_epochs, config.fine_tune_learning_rate, config.fine_tune_rate) == (2, None, 0.001)
    text = train_flags.flagfile_text(config)
    assert "--warmup_epochs=2" in text and "fine_tune_learning_rate" not in text   # unset stays unset
    again = _parse(*[line for line in text.splitlines() if not line.startswith("#")], "--fine_tune_learning_rate=3e-4")
    assert again.fine_tune_rate == 3e-4
    with pytest.raises(ValueError, match="--model=image_cnn has no backbone"):
        _parse("--data=d", "--run_dir=r", "--model=image_cnn", "--warmup_epochs=1")
