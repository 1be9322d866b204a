"""keras.applications backbones: image and video models, their weights (none | imagenet | PATH), freezing,
and the two-phase warm-up through the real trainer. Nothing downloads: Keras's get_file is stubbed."""

import json

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from dfd import models, train_flags
from dfd.models import backbones
from dfd.models.backbones import BACKBONES
from dfd.run_layout import RunLayout
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

# The smallest input each backbone accepts: small enough to build in seconds on 2 cores.
MIN_SIZE = {name: spec.min_size for name, spec in BACKBONES.items()}


def uint8_batch(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def count(weights):
    return sum(int(np.prod(weight.shape)) for weight in weights)


def values(weights):
    return [keras.ops.convert_to_numpy(weight).copy() for weight in weights]


def plain_backbone(name, size, pooling=None):
    """The keras.applications backbone alone, as dfd builds it without weights."""
    return backbones.build_backbone(name, (size, size, 3), "none", pooling=pooling)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b4", "xception"])
def test_image_backbone_models_output_float32_p_fake_on_uint8(name, mixed_precision):
    size = MIN_SIZE[name]
    model = models.build_model(name, (size, size, 3))
    assert model.input.dtype == "uint8" and models.model_kind(name) == "image"
    rescaling = model.get_layer("rescaling")
    assert rescaling.compute_dtype == "float16"
    # Each backbone's own input range: EfficientNet takes 0..255 (it scales inside), Xception [-1, 1].
    assert (rescaling.scale, rescaling.offset) == ((1.0, 0.0) if name.startswith("efficientnet") else (1 / 127.5, -1.0))
    assert model.output.dtype == "float32" and model.output_shape == (None, 1)
    assert isinstance(models.loss_for(model), keras.losses.BinaryCrossentropy)
    # GAP → dropout → Dense(1): the head adds features + 1 parameters to the backbone.
    backbone = model.get_layer(BACKBONES[name].layer_name)
    assert backbone is backbones.find_backbone(model)
    assert model.count_params() == backbone.count_params() + backbone.output.shape[-1] + 1
    if name == "efficientnet_b0":   # running the larger ones in float16 on a CPU costs seconds, not checks
        outputs = model(uint8_batch((2, size, size, 3)))
        assert outputs.dtype == "float32" and tuple(outputs.shape) == (2, 1)
        probability = keras.ops.convert_to_numpy(models.fake_probability(outputs))
        assert np.all((probability >= 0) & (probability <= 1))


def test_efficientnet_b0_counts_what_keras_counts():
    # The backbone inside the model is exactly keras.applications' (include_top=False, no weights).
    model = models.build_model("efficientnet_b0", (32, 32, 3))
    reference = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert model.count_params() == reference.count_params() + 1280 + 1 == 4_050_852


@pytest.mark.parametrize("name", ["efficientnet_b0_video", "efficientnet_b4_video", "xception_video",
                                  "inception_v3_video"])
def test_video_backbone_models_are_backbone_plus_lstm_head(name, mixed_precision):
    backbone_name = name.removesuffix("_video")
    size = MIN_SIZE[backbone_name]
    model = models.build_model(name, (2, size, size, 3), lstm_units=4, head_units=3)
    assert models.model_kind(name) == "video" and model.input.dtype == "uint8"
    encoder = model.get_layer("frame_encoder")
    assert isinstance(encoder, keras.layers.TimeDistributed)
    assert encoder.layer.name == BACKBONES[backbone_name].layer_name
    assert encoder is backbones.find_backbone(model)
    assert model.output.dtype == "float32" and model.output_shape == (None, 1)
    features = encoder.layer.output.shape[-1]
    lstm = 4 * (features + 4 + 1) * 4         # four gates over [input, state] with one bias
    head = (4 * 3 + 3) + (3 + 1)              # Dense(3, relu), Dense(1, sigmoid)
    assert model.count_params() == encoder.layer.count_params() + lstm + head
    if name == "efficientnet_b0_video":
        outputs = keras.ops.convert_to_numpy(model(uint8_batch((2, 2, size, size, 3))))
        assert outputs.dtype == "float32" and outputs.shape == (2, 1) and np.all((outputs >= 0) & (outputs <= 1))


def test_temporal_mean_has_no_lstm_and_only_the_output_layer_on_top():
    model = models.build_model("efficientnet_b0_video", (3, 32, 32, 3), temporal="mean")
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert model.get_layer("temporal_pool") is not None
    features = model.get_layer("frame_encoder").layer.output.shape[-1]
    assert model.count_params() == model.get_layer("frame_encoder").layer.count_params() + features + 1
    clips = uint8_batch((2, 3, 32, 32, 3))
    # The mean over time does not depend on the frames' order.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(clips)),
                               keras.ops.convert_to_numpy(model(clips[:, ::-1])), rtol=1e-5)
    with pytest.raises(ValueError, match="temporal must be 'lstm' or 'mean'"):
        models.build_model("efficientnet_b0_video", (3, 32, 32, 3), temporal="max")


@pytest.mark.parametrize("name, shape", [("efficientnet_b0", (32, 32, 3)), ("efficientnet_b0_video", (2, 32, 32, 3))])
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never trained: no optimizer state
def test_save_and_safe_mode_load_give_identical_outputs(tmp_path, name, shape):
    model = models.build_model(name, shape, freeze_backbone=True)
    model.compile(optimizer="adam", loss=models.loss_for(model), metrics=models.metrics_for(model))
    batch = uint8_batch((2, *shape))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)   # no Lambda layers
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(batch)), keras.ops.convert_to_numpy(loaded(batch)))
    assert not backbones.find_backbone(loaded).trainable   # the frozen backbone stays frozen


def test_frozen_video_backbone_trains_only_the_head():
    model = models.build_model("efficientnet_b0_video", (2, 32, 32, 3), freeze_backbone=True, lstm_units=4,
                               head_units=3)
    head = [model.get_layer(name) for name in ("lstm", "dense", "fake_probability")]
    assert count(model.trainable_weights) == count([w for layer in head for w in layer.weights])


def write_notop_weights_file(name, path, size, seed=7):
    """A file in the format of Keras's ImageNet notop releases (Keras 2 HDF5 weights by layer), from a
    seeded random backbone: the releases cannot be downloaded here."""
    keras.utils.set_random_seed(seed)
    backbone = plain_backbone(name, size)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return values(backbone.weights)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_imagenet_weights_come_through_keras_get_file(name, tmp_path, monkeypatch):
    size = MIN_SIZE[name]
    weights_file = BACKBONES[name].weights_file_for((size, size, 3))
    saved_file = tmp_path / weights_file
    saved = write_notop_weights_file(name, saved_file, size)
    requests = []

    def get_file(fname, origin=None, **kwargs):   # Keras's download-or-cache, without the network
        requests.append((fname, origin, kwargs))
        return str(saved_file)

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", get_file)
    model = models.build_model(name, (size, size, 3), backbone_weights="imagenet")
    # Keras asked for exactly the file the README and the error messages name, into its models cache.
    [(fname, origin, kwargs)] = requests
    assert fname == weights_file and origin.endswith(fname)
    # Keras checks every ImageNet file's hash but MobileNetV2's (its applications module passes none).
    assert kwargs["cache_subdir"] == "models" and (name == "mobilenet_v2" or kwargs["file_hash"])
    backbone = backbones.find_backbone(model)
    for loaded, expected in zip(values(backbone.weights), saved, strict=True):
        np.testing.assert_array_equal(loaded, expected)
    # The lookup is Keras's own again after the build.
    from keras.src.applications import efficientnet, inception_v3, mobilenet_v2, xception
    for module in (efficientnet, inception_v3, mobilenet_v2, xception):
        assert module.file_utils.get_file is get_file


def test_local_weights_path_builds_keras_imagenet_model_without_any_download(tmp_path, monkeypatch):
    saved = write_notop_weights_file("efficientnet_b0", tmp_path / "efficientnetb0_notop.h5", 32)

    def no_network(*args, **kwargs):
        raise AssertionError("a local weights file must not be downloaded")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    for weights in (tmp_path, tmp_path / "efficientnetb0_notop.h5"):   # the folder or the file itself
        model = models.build_model("efficientnet_b0", (32, 32, 3), backbone_weights=str(weights))
        backbone = backbones.find_backbone(model)
        for loaded, expected in zip(values(backbone.weights), saved, strict=True):
            np.testing.assert_array_equal(loaded, expected)
        # Keras's ImageNet EfficientNet: its extra input Rescaling is there, as with "imagenet".
        rescalings = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Rescaling)]
        assert len(rescalings) == 2
    random = backbones.find_backbone(models.build_model("efficientnet_b0", (32, 32, 3)))
    assert len([layer for layer in random.layers if isinstance(layer, keras.layers.Rescaling)]) == 1


def test_imagenet_without_network_or_cache_says_which_file_to_put_where(monkeypatch):
    def offline(fname, origin=None, **kwargs):
        # What keras.utils.get_file raises when the host cannot be reached.
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(ValueError) as error:
        models.build_model("xception", (71, 71, 3), backbone_weights="imagenet")
    message = str(error.value)
    for expected in ("xception_weights_tf_dim_ordering_tf_kernels_notop.h5", str(backbones.keras_cache_dir()),
                     "--backbone_weights=PATH", "--backbone_weights=none", "Temporary failure"):
        assert expected in message
    from keras.src.applications import xception
    assert xception.file_utils.get_file is offline   # restored after the failed build


def test_missing_weights_path_says_which_file_to_put_where(tmp_path):
    with pytest.raises(ValueError) as error:
        models.build_model("efficientnet_b4_video", (2, 32, 32, 3), backbone_weights=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "efficientnetb4_notop.h5") in message and str(backbones.keras_cache_dir()) in message
    with pytest.raises(ValueError, match="weights/b0.h5' does not exist"):
        models.build_model("efficientnet_b0", (32, 32, 3), backbone_weights="weights/b0.h5")


def test_frames_smaller_than_the_backbone_accepts_are_a_clear_error():
    with pytest.raises(ValueError, match="xception needs frames of at least 71×71 .* trained at 299×299"):
        models.build_model("xception", (64, 64, 3))
    with pytest.raises(ValueError, match="inception_v3_video needs frames of at least 75×75"):
        models.build_model("inception_v3_video", (4, 64, 64, 3))


def test_old_inception_weights_name_still_works(tmp_path):
    # The old name reaches backbone_weights: the missing file is reported (before anything is built).
    with pytest.raises(ValueError, match="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5' does not exist"):
        models.build_model("inception_v3", (75, 75, 3), inception_weights=str(tmp_path))
    with pytest.raises(ValueError, match="inception_weights is the old name of backbone_weights"):
        models.build_model("inception_v3", (75, 75, 3), inception_weights="none", backbone_weights="imagenet")


# --------------------------------------------------------------------------
# --warmup_epochs through the real trainer
# --------------------------------------------------------------------------

class _BackboneWatcher(keras.callbacks.Callback):
    """Backbone and head weights at the start and after every epoch, and each epoch's learning rate."""

    def __init__(self):
        super().__init__()
        self.backbone, self.head, self.learning_rates, self.trainable = {}, {}, {}, {}
        self.phase_starts = 0

    def _snapshot(self, key):
        self.backbone[key] = values(backbones.find_backbone(self.model).weights)
        self.head[key] = values(self.model.get_layer("fake_probability").weights)

    def on_train_begin(self, logs=None):
        # After BackupAndRestore (the trainer's first callback) has restored the phase's state.
        self._snapshot(f"phase{self.phase_starts}")
        self.phase_starts += 1

    def on_epoch_begin(self, epoch, logs=None):
        self.learning_rates[epoch] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.trainable[epoch] = backbones.find_backbone(self.model).trainable

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot(epoch)


class _KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {epoch + 1}")


def _same(first, second):
    return all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_fake_dataset(tmp_path_factory.mktemp("images"), kind="image", size=32,
                              counts={"train": (2, 2), "val": (1, 1)}, shards_per_split=1)


def _config(data, run_dir, **overrides):
    values_ = dict(data=str(data), run_dir=str(run_dir), model="efficientnet_b0", epochs=2, warmup_epochs=1,
                   batch_size=4, learning_rate=0.01, verbose=0, patience=0, precision="float32",
                   augment_flip=False)
    values_.update(overrides)
    return train_flags.TrainConfig(**values_)


def test_warmup_trains_the_head_then_everything_and_resumes_after_a_kill(images, tmp_path):
    # One run of both phases, killed after the first fine-tuning epoch, then resumed: every compile of an
    # EfficientNet train step costs tens of seconds on 2 cores, so the two checks share the runs.
    config = _config(images, tmp_path / "run", epochs=3)
    watcher = _BackboneWatcher()
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[watcher, _KillAfterEpoch(1)])
    assert watcher.trainable == {0: False, 1: True}
    assert watcher.learning_rates[0] == pytest.approx(0.01) and watcher.learning_rates[1] == pytest.approx(0.001)
    # Phase one: the backbone (kernels and batch-norm statistics) is untouched, the head learns.
    assert _same(watcher.backbone["phase0"], watcher.backbone[0])
    assert not _same(watcher.head["phase0"], watcher.head[0])
    # Phase two: the backbone learns too.
    assert not _same(watcher.backbone[0], watcher.backbone[1])
    run = RunLayout(config.run_dir)
    assert (run.backup / "warmup").is_dir() and (run.backup / "fine_tune").is_dir()

    resumed = _BackboneWatcher()
    summary = train(config, extra_callbacks=[resumed])   # the same command again
    # Only epoch 3 runs, fine-tuning at the lower rate, from the weights the kill left: the warm-up restores
    # its end (and runs no epoch), then phase two restores its own backup.
    assert resumed.trainable == {2: True} and resumed.learning_rates[2] == pytest.approx(0.001)
    assert _same(resumed.backbone["phase0"], watcher.backbone[0])
    assert _same(resumed.backbone["phase1"], watcher.backbone[1])
    assert summary["epochs_run"] == 3
    assert not run.backup.exists()   # a completed run leaves no backup, of either phase
    history = json.loads(run.history.read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    final = keras.saving.load_model(run.final_model, safe_mode=True)
    assert backbones.find_backbone(final).trainable


def test_warmup_needs_a_backbone_and_a_second_phase(images, tmp_path):
    with pytest.raises(ValueError, match="--model=image_cnn has no backbone"):
        _config(images, tmp_path, model="image_cnn")
    with pytest.raises(ValueError, match="--model=cnn_lstm has no backbone"):
        _config(images, tmp_path, model="cnn_lstm")
    with pytest.raises(ValueError, match="between 1 and --epochs - 1"):
        _config(images, tmp_path, warmup_epochs=2)
    with pytest.raises(ValueError, match="give one of them"):
        _config(images, tmp_path, hparams={"freeze_backbone": True})
