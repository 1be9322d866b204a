"""Models by name: parameter counts from the seed, heads, mixed precision, safe_mode save/load, two-stage."""

import inspect

import keras
import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

import dfd.models
from dfd.models import (
    MODEL_NAMES,
    build_model,
    check_hparams,
    default_hparams,
    fake_probability,
    loss_for,
    metrics_for,
    model_kind,
)
from dfd.run_layout import RunLayout

# Small but real shapes: every conv block still fits (32 → 30 → 15 → 13 → 6 → 2 → 1).
SMALL_CNN = {"conv_filters": (4, 4, 4), "dense_units": 8}
SMALL_LSTM = {"conv_filters": (4, 4, 4), "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}


def uint8_batch(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def count(weights):
    return sum(int(np.prod(weight.shape)) for weight in weights)


@pytest.fixture(scope="module")
def inception():
    # Built once for the whole module: it is the slow one.
    return build_model("inception_v3", (256, 256, 3))


def test_registry_names_and_kinds():
    assert MODEL_NAMES == ("cnn_lstm", "efficientnet_b0", "efficientnet_b0_video", "efficientnet_b4",
                           "efficientnet_b4_video", "image_cnn", "inception_v3", "inception_v3_video", "mobilenet_v2",
                           "mobilenet_v2_video", "xception", "xception_video")
    assert [name for name in MODEL_NAMES if model_kind(name) == "video"] == [
        "cnn_lstm", "efficientnet_b0_video", "efficientnet_b4_video", "inception_v3_video", "mobilenet_v2_video",
        "xception_video"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_hparams_list_every_build_argument(name):
    module = dfd.models._REGISTRY[name][1]
    parameters = inspect.signature(module.build).parameters.values()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        # Backbone models take their hparams as a dict (shared backbone ones first) and refuse leftovers.
        from dfd.models.backbone_models import backbone_defaults
        backbone = name.removesuffix("_video")
        assert set(backbone_defaults(backbone)) <= set(default_hparams(name))
    else:
        keyword_only = [parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
        assert sorted(default_hparams(name)) == sorted(keyword_only)
    default_hparams(name)["dropout"] = 0.9   # a fresh copy: callers may edit it
    assert default_hparams(name)["dropout"] != 0.9


def test_cnn_lstm_has_the_seed_parameter_count():
    model = build_model("cnn_lstm", (16, 64, 64, 3))
    # PyTorch's 552,865 minus the second LSTM bias vector (4 × 64) that Keras does not have.
    assert model.count_params() == 552_609 == 552_865 - 256
    assert model.get_layer("frame_cnn").layer.get_layer("flatten").output.shape[-1] == 1_600
    lstm = model.get_layer("lstm")
    # The cuDNN kernel conditions.
    assert (lstm.activation.__name__, lstm.recurrent_activation.__name__) == ("tanh", "sigmoid")
    assert lstm.recurrent_dropout == 0 and not lstm.unroll and lstm.use_bias


def test_global_average_pooling_makes_the_frame_features_independent_of_frame_size():
    # 3 blocks of 4 filters then Dense(8): 4 pooled features -> 4*8 + 8 dense parameters, whatever the size.
    conv = (3 * 3 * 3 * 4 + 4) + 2 * (3 * 3 * 4 * 4 + 4)
    for size in (32, 96):
        model = build_model("image_cnn", (size, size, 3), **SMALL_CNN, kernel_sizes=(3, 3, 3),
                            feature_pooling="global_average")
        assert model.count_params() == conv + (4 * 8 + 8) + (8 + 1)
    flat = build_model("image_cnn", (96, 96, 3), **SMALL_CNN, kernel_sizes=(3, 3, 3))
    assert flat.count_params() > conv + (4 * 8 + 8) + (8 + 1)
    with pytest.raises(ValueError, match="feature_pooling must be 'flatten' or 'global_average'"):
        build_model("image_cnn", (32, 32, 3), **SMALL_CNN, feature_pooling="max")


def test_inception_has_the_seed_parameter_count(inception):
    assert inception.count_params() == 23_903_010
    assert count(inception.non_trainable_weights) == 34_432
    assert inception.output_shape == (None, 2)
    assert isinstance(loss_for(inception), keras.losses.SparseCategoricalCrossentropy)


def test_inception_outputs_probabilities_on_uint8(inception):
    outputs = keras.ops.convert_to_numpy(inception(uint8_batch((2, 256, 256, 3)), training=False))
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)
    probability = fake_probability(outputs)
    assert probability.shape == (2,) and np.all((probability >= 0) & (probability <= 1))
    np.testing.assert_array_equal(probability, outputs[:, 1])
    with pytest.raises(ValueError, match="shape"):
        fake_probability(outputs[:, 1])   # already P(fake): (B,) is not a model output


@pytest.mark.parametrize("name, shape, hparams", [
    ("image_cnn", (32, 32, 3), SMALL_CNN),
    ("image_cnn", (40, 48, 3), SMALL_CNN),   # any input size works
    ("cnn_lstm", (3, 32, 32, 3), SMALL_LSTM),
])
def test_small_models_on_uint8_batches(name, shape, hparams, mixed_precision):
    model = build_model(name, shape, **hparams)
    assert model.input.dtype == "uint8"
    assert model.get_layer("rescaling").compute_dtype == "float16"   # mixed precision is on
    outputs = model(uint8_batch((2, *shape)))
    # The last layer computes in float32 even under mixed_float16.
    assert outputs.dtype == "float32" and tuple(outputs.shape) == (2, 1)
    probability = keras.ops.convert_to_numpy(fake_probability(outputs))
    assert probability.shape == (2,) and np.all((probability >= 0) & (probability <= 1))
    assert isinstance(loss_for(model), keras.losses.BinaryCrossentropy)


def test_policy_is_reset_after_mixed_precision_tests():
    assert keras.mixed_precision.global_policy().name == "float32"


def test_one_check_refuses_hparams_a_model_lacks():
    check_hparams("cnn_lstm", {"dropout": 0.1, "lstm_units": 32})
    with pytest.raises(ValueError, match=r"--lstm_units do\(es\) not apply to --model=image_cnn; its hparams are: "
                                         r"conv_filters, dense_units, dropout"):
        check_hparams("image_cnn", ["dropout", "lstm_units"])
    with pytest.raises(ValueError, match="valid models"):
        check_hparams("resnet", [])


def test_hparams_from_flag_strings():
    model = build_model("image_cnn", (32, 32, 3), conv_filters="4, 6", kernel_sizes="3", dense_units=5)
    features = model.get_layer("frame_features")
    assert [features.get_layer(f"conv{i}").filters for i in range(2)] == [4, 6]
    assert [features.get_layer(f"conv{i}").kernel_size for i in range(2)] == [(3, 3), (3, 3)]


@pytest.mark.parametrize("call, message", [
    (lambda: build_model("resnet", (64, 64, 3)), "valid models: cnn_lstm, efficientnet_b0, efficientnet_b0_video"),
    (lambda: model_kind("resnet"), "valid models"),
    (lambda: default_hparams("resnet"), "valid models"),
    (lambda: build_model("image_cnn", (64, 64, 3), lstm_units=8),
     "--lstm_units do(es) not apply to --model=image_cnn; its hparams are: conv_filters, dense_units, dropout, "
     "feature_pooling, kernel_sizes, l2"),
    (lambda: build_model("cnn_lstm", (64, 64, 3)), "takes inputs shaped (num_frames, height, width, 3)"),
    (lambda: build_model("image_cnn", (8, 8, 3)), "too small"),
    (lambda: build_model("image_cnn", (64, 64, 3), conv_filters=(4, 4), kernel_sizes=(3, 3, 3)),
     "one entry per conv_filters"),
    (lambda: build_model("cnn_lstm", (4, 64, 64, 3), freeze_frame_cnn=True), "freeze_frame_cnn needs frame_cnn"),
])
def test_clear_errors(call, message):
    with pytest.raises(ValueError, match=None) as error:
        call()
    assert message in str(error.value)


def test_missing_inception_weights_file_says_what_to_place_where(tmp_path):
    missing = tmp_path / "weights" / "notop.h5"
    with pytest.raises(ValueError) as error:
        build_model("inception_v3", (256, 256, 3), backbone_weights=str(missing))
    assert str(missing) in str(error.value)
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(error.value)
    # A folder means "the standard file name inside it".
    with pytest.raises(ValueError, match="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        build_model("inception_v3", (256, 256, 3), backbone_weights=str(tmp_path))


def write_notop_weights_file(path, seed=7):
    """A file in the format of Keras's ImageNet notop release (Keras 2 HDF5 weights by layer name).

    The release itself cannot be downloaded here, so a seeded random backbone is written with Keras's
    own legacy HDF5 writer, the code that produced the release's format.
    """
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    backbone = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return backbone


def test_inception_loads_a_local_notop_weights_file_and_freezes_the_backbone(tmp_path):
    source = write_notop_weights_file(tmp_path / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    # A folder holding the standard file name is accepted too, and weights fit any input size >= 75.
    model = build_model("inception_v3", (96, 96, 3), backbone_weights=str(tmp_path), freeze_backbone=True,
                        head_units=16)
    backbone = model.get_layer("inception_v3")
    for loaded, saved in zip(backbone.weights, source.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(saved))
    # Feature extraction: only the head trains (2048*16 + 16 + 16*2 + 2 parameters).
    assert count(model.trainable_weights) == 2048 * 16 + 16 + 16 * 2 + 2
    before = [keras.ops.convert_to_numpy(w).copy() for w in backbone.weights]
    head_before = keras.ops.convert_to_numpy(model.get_layer("dense").kernel).copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss_for(model))
    model.fit(uint8_batch((4, 96, 96, 3)), np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    # Frozen means frozen: kernels and batch-norm statistics alike (BN runs in inference mode).
    for old, weight in zip(before, backbone.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(weight), err_msg=weight.path)
    assert not np.array_equal(head_before, keras.ops.convert_to_numpy(model.get_layer("dense").kernel))


@pytest.mark.parametrize("name, shape, hparams", [
    ("image_cnn", (32, 32, 3), SMALL_CNN),
    ("cnn_lstm", (3, 32, 32, 3), SMALL_LSTM),
])
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never trained: no optimizer state
def test_save_and_safe_mode_load_give_identical_outputs(tmp_path, name, shape, hparams):
    model = build_model(name, shape, **hparams)
    # Compiled with the custom metrics, as the trainer saves it: they must deserialize too.
    model.compile(optimizer="adam", loss=loss_for(model), metrics=metrics_for(model))
    batch = uint8_batch((2, *shape))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(model.predict(batch, verbose=0), loaded.predict(batch, verbose=0))


def test_safe_mode_refuses_a_lambda_layer(tmp_path):
    # Why the models avoid Lambda: its Python code is pickled bytecode, which safe_mode refuses to run.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=True)


def test_metrics_score_p_fake_for_both_heads():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=96)
    # Scores spread over [0, 1] and correlated with the label, so AUC is neither 0.5 nor 1.
    p_fake = np.clip(0.35 * labels + rng.uniform(0, 0.65, size=96), 0, 1).astype("float32")
    heads = {"sigmoid-1": p_fake[:, None], "softmax-2": np.stack([1 - p_fake, p_fake], axis=1)}
    expected_auc = roc_auc_score(labels, p_fake)
    for head, outputs in heads.items():
        # A model whose output is exactly these probabilities: an identity over a float input.
        inputs = keras.Input((outputs.shape[1],))
        model = keras.Model(inputs, keras.layers.Identity()(inputs))
        model.compile(loss=loss_for(model), metrics=metrics_for(model))
        results = model.evaluate(outputs, labels, batch_size=32, return_dict=True, verbose=0)
        # Keras's AUC is a 200-threshold Riemann sum; sklearn's is exact.
        assert results["auc"] == pytest.approx(expected_auc, abs=5e-3), head
        assert results["precision"] == pytest.approx(precision_score(labels, p_fake > 0.5), abs=1e-6), head
        assert results["recall"] == pytest.approx(recall_score(labels, p_fake > 0.5), abs=1e-6), head
        assert results["accuracy"] == pytest.approx(np.mean((p_fake > 0.5) == labels), abs=1e-6), head


def save_image_cnn(run_dir, frame_size, fit=False):
    image_model = build_model("image_cnn", (frame_size, frame_size, 3), **SMALL_CNN)
    image_model.compile(optimizer="adam", loss=loss_for(image_model), metrics=metrics_for(image_model))
    if fit:   # off by default: compiling a train step is slow on 2 cores
        image_model.fit(uint8_batch((8, frame_size, frame_size, 3)), np.arange(8) % 2, epochs=1, verbose=0)
    image_model.save(RunLayout(run_dir).final_model)
    return image_model


def test_two_stage_frozen_frame_cnn(tmp_path):
    # Fitted and saved with its optimizer and metrics, as a real image_cnn run leaves model.keras.
    image_model = save_image_cnn(tmp_path, 32, fit=True)
    video_model = build_model("cnn_lstm", (3, 32, 32, 3), frame_cnn=str(tmp_path), freeze_frame_cnn=True,
                              lstm_units=4, head_units=4)
    clips = uint8_batch((4, 3, 32, 32, 3), seed=2)

    # Scaling happens once: the frame CNN inside sees the same [0, 1] floats as the image model did.
    frame_features = keras.Model(video_model.input, video_model.get_layer("frame_cnn").output)
    expected = image_model.get_layer("frame_features")(clips.reshape(-1, 32, 32, 3).astype("float32") / 255)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frame_features(clips)),
                               keras.ops.convert_to_numpy(expected).reshape(4, 3, -1), rtol=1e-5, atol=1e-6)

    frozen = video_model.get_layer("frame_cnn")
    assert not frozen.trainable and count(video_model.trainable_weights) == count(
        video_model.get_layer("lstm").weights + video_model.get_layer("dense").weights
        + video_model.get_layer("fake_probability").weights)
    before_cnn = [keras.ops.convert_to_numpy(weight).copy() for weight in frozen.weights]
    before_lstm = [keras.ops.convert_to_numpy(weight).copy() for weight in video_model.get_layer("lstm").weights]
    video_model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss_for(video_model))
    video_model.train_on_batch(clips, np.array([0, 1, 0, 1]))
    for before, after in zip(before_cnn, frozen.weights, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert all(not np.array_equal(before, keras.ops.convert_to_numpy(after))
               for before, after in zip(before_lstm, video_model.get_layer("lstm").weights, strict=True))

    # The two-stage model saves and loads in safe mode, frozen part included.
    video_model.save(tmp_path / "video.keras")
    loaded = keras.saving.load_model(tmp_path / "video.keras", safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(video_model(clips)),
                                  keras.ops.convert_to_numpy(loaded(clips)))
    assert not loaded.get_layer("frame_cnn").trainable


def test_frame_cnn_errors(tmp_path):
    with pytest.raises(ValueError, match="neither model.keras nor checkpoints/best.keras"):
        build_model("cnn_lstm", (3, 32, 32, 3), frame_cnn=str(tmp_path))
    with pytest.raises(ValueError, match="neither an image_cnn run directory nor a .keras file"):
        build_model("cnn_lstm", (3, 32, 32, 3), frame_cnn=str(tmp_path / "nothing.keras"))
    save_image_cnn(tmp_path, 32)
    with pytest.raises(ValueError, match=r"takes \(32, 32, 3\) frames but the videos have \(40, 40, 3\)"):
        build_model("cnn_lstm", (3, 40, 40, 3), frame_cnn=str(RunLayout(tmp_path).final_model))


def test_frozen_frame_cnn_follows_mixed_precision(tmp_path, mixed_precision):
    keras.mixed_precision.set_global_policy("float32")
    save_image_cnn(tmp_path, 32)   # saved in float32
    keras.mixed_precision.set_global_policy("mixed_float16")
    video_model = build_model("cnn_lstm", (3, 32, 32, 3), frame_cnn=str(tmp_path), freeze_frame_cnn=True)
    frame_cnn = video_model.get_layer("frame_cnn").layer
    # The loaded CNN is re-made under the current policy, so it runs in float16 like the rest.
    assert frame_cnn.name == "frame_features"
    assert frame_cnn.get_layer("conv0").compute_dtype == "float16"
    assert video_model(uint8_batch((2, 3, 32, 32, 3))).dtype == "float32"
