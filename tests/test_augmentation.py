"""On-device augmentation (dfd.models.augmentation): training only, one transform per clip, seeded, saved safely."""

import keras
import numpy as np
import pytest

from dfd.models import augmentation, build_model, fake_probability, loss_for
from dfd.models.augmentation import ClipAugmentation, DeviceAugment
from dfd.run_layout import RunLayout

# One op at a time, at a strength that changes every clip visibly.
OPS = {
    "flip": dict(flip=True),
    "crop": dict(crop=0.4),
    "brightness": dict(brightness=0.3),
    "contrast": dict(contrast=0.5),
    "saturation": dict(saturation=0.8),
    "hue": dict(hue=0.3),
    "blur": dict(blur=2.0),
    "noise": dict(noise=0.1),
    "cutout": dict(cutout=0.5),
}


def _clips(shape=(16, 3, 12, 12, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _still_clips(batch=16, frames=4, size=12):
    """Clips whose frames are all the same picture: a per-clip transform keeps them equal."""
    return np.repeat(_clips((batch, 1, size, size, 3)), frames, axis=1)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("shape", [(16, 3, 12, 12, 3), (16, 12, 12, 3)], ids=["clips", "images"])
def test_each_op_changes_a_training_batch_and_is_the_identity_at_inference(op, shape):
    clips = _clips(shape)
    layer = ClipAugmentation(**OPS[op], seed=1)
    trained = keras.ops.convert_to_numpy(layer(clips, training=True))
    assert trained.dtype == np.uint8 and trained.shape == clips.shape
    changed = (trained != clips).reshape(len(clips), -1).any(axis=1)
    # flip and cutout act on about half the clips; every other op on (nearly) all of them.
    assert changed.sum() >= (4 if op in ("flip", "cutout") else 14), changed
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(clips, training=False)), clips)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(clips)), clips)


@pytest.mark.parametrize("op", sorted(set(OPS) - {"noise"}))
def test_every_frame_of_a_clip_gets_the_same_transform(op):
    """Noise is the documented exception: its strength is per clip, the noise per frame."""
    clips = _still_clips()
    out = keras.ops.convert_to_numpy(ClipAugmentation(**OPS[op], seed=2)(clips, training=True))
    assert (out == out[:, :1]).all()
    assert (out != clips).any()


def test_the_flip_mirrors_whole_clips_only():
    clips = _clips((32, 3, 5, 7, 3))
    out = keras.ops.convert_to_numpy(ClipAugmentation(flip=True, seed=0)(clips, training=True))
    mirrored = [bool((clip == original[:, :, ::-1]).all()) for clip, original in zip(out, clips, strict=True)]
    for clip, original, is_mirrored in zip(out, clips, mirrored, strict=True):
        assert is_mirrored or (clip == original).all()
    assert 6 < sum(mirrored) < 26


def test_the_crop_zooms_into_one_box_per_clip():
    """A crop of a ramp is a ramp again, zoomed: an output pixel spans 0.6 to 1 source pixel (gentler slope)."""
    ramp = np.tile(np.arange(0, 240, 10, dtype=np.uint8)[None, :, None], (24, 1, 3))   # columns 0..230
    clips = np.repeat(ramp[None, None], 8, axis=0).repeat(2, axis=1)                    # (8, 2, 24, 24, 3)
    out = keras.ops.convert_to_numpy(ClipAugmentation(crop=0.4, seed=3)(clips, training=True)).astype(int)
    assert (out == out[:, :1]).all()
    steps = np.diff(out[:, 0, 0, :, 0], axis=1)
    assert ((steps >= 5) & (steps <= 11)).all() and (steps.mean(axis=1) < 8.5).any()


def test_a_fixed_seed_reproduces_and_another_seed_differs():
    clips = _clips()
    everything = dict(flip=True, crop=0.2, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, blur=1.0,
                      noise=0.02, cutout=0.3)
    first = keras.ops.convert_to_numpy(ClipAugmentation(**everything, seed=7)(clips, training=True))
    again = keras.ops.convert_to_numpy(ClipAugmentation(**everything, seed=7)(clips, training=True))
    other = keras.ops.convert_to_numpy(ClipAugmentation(**everything, seed=8)(clips, training=True))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_bad_strengths_are_clear_errors():
    with pytest.raises(ValueError, match="augment_crop must be in"):
        DeviceAugment(crop=1.5)
    with pytest.raises(ValueError, match="augment_blur"):
        DeviceAugment(blur=-1)
    assert not DeviceAugment(flip=False).enabled and DeviceAugment().enabled


def test_a_wrapped_model_keeps_its_parameters_saves_and_reloads_in_safe_mode_as_the_identity(tmp_path):
    inner = build_model("cnn_lstm", (16, 64, 64, 3))
    wrapped = augmentation.wrap(inner, DeviceAugment(flip=True, crop=0.2, noise=0.05, cutout=0.3), seed=0)
    assert wrapped.count_params() == inner.count_params() == 552_609
    assert augmentation.unwrap(wrapped) is inner and augmentation.unwrap(inner) is inner
    assert augmentation.wrap(inner, DeviceAugment(flip=False)) is inner   # nothing on: nothing added
    wrapped.compile(optimizer="adam", loss=loss_for(wrapped))
    wrapped.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    clips = _clips((2, 16, 64, 64, 3))
    expected = keras.ops.convert_to_numpy(inner(clips))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(clips)), expected, rtol=1e-6)
    np.testing.assert_allclose(reloaded.predict_on_batch(clips), expected, rtol=1e-6)
    layer = reloaded.get_layer(augmentation.LAYER_NAME)
    assert layer.augment == DeviceAugment(flip=True, crop=0.2, noise=0.05, cutout=0.3)


def test_mixed_float16_trains_with_float32_augmentation_and_uint8_into_the_model():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inner = build_model("image_cnn", (16, 16, 3), conv_filters="4,4", kernel_sizes="3", dense_units=8)
        wrapped = augmentation.wrap(inner, DeviceAugment(flip=True, crop=0.2, brightness=0.2, blur=1.0), seed=0)
        layer = wrapped.get_layer(augmentation.LAYER_NAME)
        assert layer.compute_dtype == "float32"
        out = layer(_clips((4, 16, 16, 3)), training=True)
        assert keras.backend.standardize_dtype(out.dtype) == "uint8"
        wrapped.compile(optimizer="adam", loss=loss_for(wrapped))
        wrapped.train_on_batch(_clips((4, 16, 16, 3)), np.array([0, 1, 0, 1]))
        scores = fake_probability(keras.ops.convert_to_numpy(wrapped(_clips((4, 16, 16, 3)))))
        assert scores.dtype == np.float32 and np.isfinite(scores).all()
    finally:
        keras.config.set_dtype_policy(previous)


def test_two_stage_cnn_lstm_finds_frame_features_inside_a_wrapped_image_cnn(tmp_path):
    image_model = augmentation.wrap(
        build_model("image_cnn", (32, 32, 3), conv_filters="4,4", kernel_sizes="3", dense_units=8),
        DeviceAugment(flip=True, crop=0.1), seed=0)
    image_model.save(RunLayout(tmp_path).final_model)
    video_model = build_model("cnn_lstm", (3, 32, 32, 3), frame_cnn=str(tmp_path), freeze_frame_cnn=True,
                              lstm_units=4, head_units=4)
    assert video_model.get_layer("frame_cnn").layer.output.shape[-1] == 8
    assert not video_model.get_layer("frame_cnn").trainable


def test_every_op_compiles_with_xla():
    """--jit_compile=True: every op has an XLA kernel (tf.image.crop_and_resize, for one, has none)."""
    inner = build_model("image_cnn", (12, 12, 3), conv_filters="4", kernel_sizes="3", dense_units=4)
    everything = {key: value for op in OPS.values() for key, value in op.items()}
    wrapped = augmentation.wrap(inner, DeviceAugment(**everything), seed=0)
    wrapped.compile(optimizer="adam", loss=loss_for(wrapped), jit_compile=True)
    loss = wrapped.train_on_batch(_clips((4, 12, 12, 3)), np.array([0, 1, 0, 1]))
    assert np.isfinite(loss)
