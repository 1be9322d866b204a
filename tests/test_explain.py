"""Grad-CAM explanations: found in every model kind, right on a planted patch, written by predict and evaluate."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from dfd import models
from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import evaluate, explain

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_predict_export import SIZE, image_run, make_run, media_files, video_run  # noqa: E402,F401

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
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(pixels))
    output = keras.layers.Dense(1, activation="sigmoid")(flat)
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


def test_predict_explain_writes_a_picture_per_scored_file(image_run, media_files, tmp_path):  # noqa: F811
    from dfd.predict import predict_command

    output = tmp_path / "predictions.json"
    code = predict_command(str(image_run.root), [str(media_files)], output=str(output), video_frames=5,
                           explain=str(tmp_path / "explain"))
    assert code == 0
    entries = {Path(entry["path"]).name: entry for entry in json.loads(output.read_text())}
    assert "explanation" not in entries["broken.mp4"]
    for name in ("face.jpg", "clip.mp4"):
        picture = Path(entries[name]["explanation"])
        assert picture.parent == tmp_path / "explain" and picture.read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "explain").glob("*.png"))) == 2


@pytest.mark.parametrize("kind", ["image model on video records", "cnn_lstm"])
def test_evaluate_explain_writes_confident_examples_and_tensorboard_images(kind, video_run, tmp_path):  # noqa: F811
    layout, data_dir = video_run
    if kind == "cnn_lstm":
        spec = DatasetMetadata.load(data_dir).preprocessing
        keras.utils.set_random_seed(0)
        model = models.build_model("cnn_lstm", (4, SIZE, SIZE, 3), conv_filters=(4,), kernel_sizes=(3,),
                                   frame_dense_units=4, lstm_units=4, head_units=4)
        layout = make_run(tmp_path / "run", spec, model, data_dir)
    # With calibration and a perturbation too: every option of dfd.evaluate on both model kinds.
    result = evaluate.evaluate(layout.root, split="test", explain=1, print_report=False, calibrate=True,
                               perturbations=["blur:0,2"])
    # 8 val clips are too few to trust a temperature: none is written, the scores stay raw.
    assert result["temperature"] == 1.0 and not (layout.root / "calibration.json").exists()
    assert not result["calibration_fit"]["kept"]
    blurred = result["robustness"]["perturbations"]["blur"]
    assert blurred[0] == {"level": 0.0, **result["robustness"]["unperturbed"]}
    pictures = sorted((layout.eval_dir("test") / "explain").glob("*.png"))
    assert [str(path.relative_to(layout.eval_dir("test"))) for path in pictures] == sorted(result["explained"])
    groups = {"_".join(path.name.split("_")[:2]) for path in pictures}   # e.g. correct_real_00_clip0001.mp4.png
    # One correct answer of each class at least (a test split of 4 real and 4 fake), at most 1 per group.
    assert 2 <= len(pictures) <= 4 and len(groups) == len(pictures)
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in pictures)
    assert list((layout.tensorboard / "eval" / "test").glob("events.out.tfevents.*"))


def test_select_examples_takes_the_most_confident_of_each_group():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.6, 0.2, 0.95, 0.7])
    groups = explain.select_examples(labels, scores, threshold=0.5, count=1)
    assert groups == {"mistake_real": [1], "correct_real": [0], "mistake_fake": [3], "correct_fake": [4]}
    assert explain.select_examples(labels, scores, 0.5, 5)["correct_fake"] == [4, 5]
