"""Grad-CAM explanations: found generically in every model kind, right on a planted patch, written by predict and evaluate."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from dfd import models
from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import evaluate, explain, loading

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_predict_export import SIZE, image_run, make_run, media_files, video_run  # noqa: E402,F401

from dfd.testing.fake_shards import write_fake_dataset  # noqa: E402

TINY_CNN = dict(conv_filters=(4, 8), kernel_sizes=(3, 3))


def augmentation_wrapper(inner: keras.Model) -> keras.Model:
    """uint8 -> augmentation layers (random at training only) -> the model, as the trainer wraps models."""
    pixels = keras.Input(inner.inputs[0].shape[1:], dtype="uint8")
    x = keras.layers.RandomFlip("horizontal")(pixels)
    x = keras.layers.RandomContrast(0.2)(x)
    return keras.Model(pixels, inner(keras.layers.Activation("linear", dtype="uint8")(x)))


@pytest.mark.parametrize("name, shape, hparams, layer", [
    ("image_cnn", (32, 32, 3), dict(TINY_CNN, dense_units=8), "pool1"),
    ("image_cnn", (32, 32, 3), dict(TINY_CNN, dense_units=8, feature_pooling="global_average"), "pool1"),
    ("cnn_lstm", (3, 32, 32, 3), dict(TINY_CNN, frame_dense_units=8, lstm_units=4, head_units=4), "pool1"),
    ("inception_v3", (75, 75, 3), dict(head_units=8), None),
    ("wrapped image_cnn", (32, 32, 3), dict(TINY_CNN, dense_units=8), "pool1"),
])
def test_heatmaps_have_the_crop_size_and_are_finite_for_every_model_kind(name, shape, hparams, layer):
    keras.utils.set_random_seed(0)
    model = models.build_model(name.split()[-1], shape, **hparams)
    if name.startswith("wrapped"):
        model = augmentation_wrapper(model)
    path = explain.feature_map_path(model)
    if layer is not None:
        assert path[-1].name == layer
    batch = np.random.default_rng(0).integers(0, 256, (2,) + shape, dtype=np.uint8)
    heatmaps, logits = explain.grad_cam(model, batch, path)
    frames = 2 * (shape[0] if len(shape) == 4 else 1)
    assert heatmaps.shape == (frames,) + shape[-3:-1] and np.isfinite(heatmaps).all() and heatmaps.min() >= 0
    # The logit read from the head gives the model's own P(fake).
    probability = np.asarray(models.fake_probability(np.asarray(model.predict_on_batch(batch))))
    assert np.allclose(1 / (1 + np.exp(-logits)), probability, atol=1e-4)


def test_a_model_without_convolutions_is_refused():
    pixels = keras.Input((8, 8, 3), dtype="uint8")
    output = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(pixels)))
    with pytest.raises(ValueError, match="no spatial feature map"):
        explain.feature_map_path(keras.Model(pixels, output))


PATCH = (slice(4, 12), slice(20, 28))   # rows, columns of the bright square planted on fakes


def planted_patch_images(rng, count):
    images = rng.integers(0, 100, (count, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(count) % 2
    images[labels == 1, PATCH[0], PATCH[1]] = 255
    return images, labels


def test_heatmap_peak_falls_on_a_planted_fake_patch():
    rng = np.random.default_rng(0)
    images, labels = planted_patch_images(rng, 64)
    keras.utils.set_random_seed(0)
    model = models.build_model("image_cnn", (32, 32, 3), conv_filters=(8, 16), kernel_sizes=(3, 3), dense_units=16,
                               dropout=0.0, feature_pooling="global_average")
    model.compile(keras.optimizers.Adam(0.01), loss=models.loss_for(model))
    model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    test_images, test_labels = planted_patch_images(np.random.default_rng(1), 16)
    fakes = test_images[test_labels == 1]
    assert models.fake_probability(model.predict_on_batch(fakes)).min() > 0.5   # it learned the patch
    heatmaps, _ = explain.grad_cam(model, fakes)
    peaks = [np.unravel_index(np.argmax(heatmap), heatmap.shape) for heatmap in heatmaps]
    # The feature map is 6x6 for 32x32 crops (a cell is about 5 pixels): allow 3 pixels around the patch.
    on_patch = [PATCH[0].start - 3 <= row < PATCH[0].stop + 3 and PATCH[1].start - 3 <= column < PATCH[1].stop + 3
                for row, column in peaks]
    assert all(on_patch), peaks
    inside = heatmaps[:, PATCH[0], PATCH[1]].mean()
    outside = (heatmaps.sum() - heatmaps[:, PATCH[0], PATCH[1]].sum()) / (heatmaps.size - 64 * len(heatmaps))
    assert inside > 3 * outside, (inside, outside)
