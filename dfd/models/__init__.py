"""The models, looked up by name (`--model`). The trainer, tuner, evaluate, predict and export share this API.

    build_model(name, input_shape, **hparams) -> keras.Model   # not compiled: the trainer compiles
    MODEL_NAMES                                                 # every name, sorted (see _REGISTRY)
    model_kind(name) -> "image" | "video"                       # image: (H, W, 3); video: (T, H, W, 3)
    default_hparams(name) -> dict                               # every hparam of a model with its default
    HPARAM_ALIASES                                              # old hparam name → its current name
    has_backbone(name) -> bool                                  # a keras.applications backbone (warm-up, freezing)
    check_hparams(name, hparams)                                # ValueError for hparams model `name` lacks
    fake_probability(outputs) -> P(fake), shape (B,)            # numpy or tensor
    loss_for(model) -> keras loss for integer labels (0 real, 1 fake)
    metrics_for(model) -> [accuracy, auc, precision, recall] on P(fake)
    augmentation.wrap(model, DeviceAugment(...)) / unwrap(model)  # training augmentation on the accelerator

Inputs are uint8 batches; each model's first layer scales them to float on the accelerator. The last
layer computes in float32, so outputs are float32 under mixed precision. Heads: every model ends in
Dense(1, sigmoid) except inception_v3, which ends in Dense(2, softmax) as in the seed.

Image models: image_cnn (the seed's CNN), inception_v3 (the seed's transfer model), efficientnet_b0,
efficientnet_b4, xception, mobilenet_v2 (dfd.models.backbone_models). Video models: cnn_lstm (the seed's
CNN+LSTM) and <backbone>_video for each backbone (efficientnet_b0, efficientnet_b4, xception, inception_v3,
mobilenet_v2): the
backbone encodes each frame inside TimeDistributed, then an LSTM head or a temporal mean.

Metrics for both heads: labels stay integers for every model. loss_for picks binary crossentropy
(sigmoid-1) or sparse categorical crossentropy (softmax-2); metrics_for returns registered Keras
metrics that first reduce either head's output to P(fake) (column 0 or column 1) and then score it,
so the trainer compiles every model the same way and `val_auc` is the ROC AUC of P(fake) everywhere:

    model = build_model(name, input_shape, **hparams)
    model.compile(optimizer, loss=loss_for(model), metrics=metrics_for(model))

Hparams (default_hparams(name) is the source of truth; conv_filters/kernel_sizes also accept "16,32,64"):
    image_cnn     conv_filters=(16, 32, 64) kernel_sizes=(3, 3, 5) dense_units=256 dropout=0.25 l2=0.0
    inception_v3  backbone_weights="none" freeze_backbone=False head_units=1024 dropout=0.0
    efficientnet_b0, efficientnet_b4, xception, mobilenet_v2
                  backbone_weights="none" freeze_backbone=False dropout=0.2 (0.4 for efficientnet_b4)
    <backbone>_video
                  backbone_weights="none" freeze_backbone=False temporal="lstm" (or "mean") lstm_units=64
                  head_units=64 dropout=0.25 (lstm_units and head_units shape only the LSTM head)
    every backbone model also: freeze_batch_norm=False bn_momentum=0.0 (the backbone's own); mobilenet_v2 and
                  mobilenet_v2_video: backbone_alpha=1.0 (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    backbone_weights: none | imagenet (Keras's download and cache) | PATH (a local notop .h5, or a folder
                  holding it; for MobileNetV2 also torchvision's .pth state dict); see dfd.models.backbones.
                  The old name inception_weights still works.
    cnn_lstm      conv_filters=(16, 32, 64) kernel_sizes=(3, 3, 5) frame_dense_units=256 lstm_units=64
                  head_units=64 dropout=0.25 l2=0.0 frame_cnn="none" (or an image_cnn run dir / .keras file)
                  freeze_frame_cnn=False

No Lambda layers: saved models load with keras.saving.load_model(path, safe_mode=True). Custom
classes (the metrics) are registered under the package "dfd"; import dfd.models before loading.
"""

from __future__ import annotations

import keras

from dfd.models import cnn_lstm, image_cnn, inception
from dfd.models.backbone_models import ImageBackboneModel, VideoBackboneModel
from dfd.models.backbones import BACKBONE_NAMES
from dfd.models.heads import fake_probability, loss_for, metrics_for

# name → (kind, module (or object) with DEFAULTS and build(input_shape, **hparams))
_REGISTRY = {
    "cnn_lstm": ("video", cnn_lstm),
    "image_cnn": ("image", image_cnn),
    "inception_v3": ("image", inception),
    **{name: ("image", ImageBackboneModel(name)) for name in BACKBONE_NAMES if name != "inception_v3"},
    **{f"{name}_video": ("video", VideoBackboneModel(name)) for name in BACKBONE_NAMES},
}

# Old hparam names still accepted (flags, flagfiles, old runs' flags.txt, build_model kwargs).
HPARAM_ALIASES = {"inception_weights": "backbone_weights"}

MODEL_NAMES = tuple(sorted(_REGISTRY))

# Hparams holding one int per conv block; flags may hand them over as "16,32,64".
_INT_TUPLE_HPARAMS = ("conv_filters", "kernel_sizes")

__all__ = ["HPARAM_ALIASES", "MODEL_NAMES", "build_model", "check_hparams", "default_hparams", "fake_probability",
           "has_backbone", "loss_for", "metrics_for", "model_kind"]


def _entry(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}.")
    return _REGISTRY[name]


def model_kind(name: str) -> str:
    """"image" for models taking (H, W, 3) images, "video" for models taking (T, H, W, 3) clips."""
    return _entry(name)[0]


def has_backbone(name: str) -> bool:
    """True for models built on a keras.applications backbone (backbone_weights, freeze_backbone, warm-up)."""
    return "backbone_weights" in _entry(name)[1].DEFAULTS


def default_hparams(name: str) -> dict:
    """Every hparam of model `name` with its default (a fresh dict; the types tell flag types)."""
    return dict(_entry(name)[1].DEFAULTS)


def check_hparams(name: str, hparams) -> None:
    """A ValueError naming the hparams (names, or a dict's keys) that model `name` does not have, and its own.

    Shared names mean the same thing in every model (dropout, l2, conv_filters...), so one flag serves all
    models; one set for a model without it (--lstm_units with --model=image_cnn) is refused, not dropped.
    The trainer's flags, the tuner's pinned hparams and build_model's kwargs all check here.
    """
    valid = _entry(name)[1].DEFAULTS
    foreign = sorted(set(hparams) - set(valid))
    if foreign:
        raise ValueError(f"--{', --'.join(foreign)} do(es) not apply to --model={name}; "
                         f"its hparams are: {', '.join(sorted(valid))}")


def _int_tuple(name: str, value) -> tuple:
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",") if part]
    elif isinstance(value, int):
        value = [value]
    try:
        result = tuple(int(part) for part in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers, e.g. 16,32,64; got {value!r}.") from None
    if not result or min(result) < 1:
        raise ValueError(f"{name} must be positive integers, got {value!r}.")
    return result


def _normalize(hparams: dict) -> dict:
    for key in _INT_TUPLE_HPARAMS:
        if key in hparams:
            hparams[key] = _int_tuple(key, hparams[key])
    if "conv_filters" in hparams and "kernel_sizes" in hparams:
        filters, kernels = hparams["conv_filters"], hparams["kernel_sizes"]
        if len(kernels) == 1:   # one kernel size for every block
            kernels = kernels * len(filters)
        if len(kernels) != len(filters):
            raise ValueError(f"kernel_sizes {kernels} needs one entry per conv_filters entry {filters} (or just one).")
        hparams["kernel_sizes"] = kernels
    if "dropout" in hparams and not 0 <= float(hparams["dropout"]) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {hparams['dropout']!r}.")
    if "l2" in hparams and float(hparams["l2"]) < 0:
        raise ValueError(f"l2 must be >= 0, got {hparams['l2']!r}.")
    return hparams


def build_model(name: str, input_shape: tuple, **hparams) -> keras.Model:
    """Model `name` for uint8 inputs of `input_shape` (no batch dimension), not compiled.

    Unspecified hparams take default_hparams(name); an unknown one is a ValueError naming the valid ones.
    """
    kind, module = _entry(name)
    for old, new in HPARAM_ALIASES.items():
        if old in hparams:
            if new in hparams and hparams[new] != hparams[old]:
                raise ValueError(f"{old} is the old name of {new}: give only {new}.")
            hparams[new] = hparams.pop(old)
    check_hparams(name, hparams)
    input_shape = tuple(int(size) for size in input_shape)
    expected_rank = 3 if kind == "image" else 4
    if len(input_shape) != expected_rank or input_shape[-1] != 3:
        layout = "(height, width, 3)" if kind == "image" else "(num_frames, height, width, 3)"
        raise ValueError(f"Model {name!r} is a {kind} model and takes inputs shaped {layout}, got {input_shape}.")
    return module.build(input_shape, **_normalize({**module.DEFAULTS, **hparams}))
