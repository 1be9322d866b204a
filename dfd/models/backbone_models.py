"""Image and video models on a keras.applications backbone (dfd.models.backbones), one builder each.

Image (`efficientnet_b0`, `efficientnet_b4`, `xception`, `mobilenet_v2`):
    uint8 → Rescaling (the backbone's own range) → backbone → GlobalAveragePooling → Dropout → Dense(1, sigmoid)
Video (`<backbone>_video`, also `inception_v3_video`): the same backbone encodes every frame inside
TimeDistributed (with its global average pooling), then either
    temporal="lstm": Dropout → LSTM → Dense(relu) → Dropout → Dense(1, sigmoid)   (cnn_lstm's head)
    temporal="mean": GlobalAveragePooling over time → Dropout → Dense(1, sigmoid)
The last layer computes in float32 (P(fake) stays accurate under mixed precision). `inception_v3` keeps
the seed's own head (dfd.models.inception).

Each registered model is an instance with the module API the registry expects: DEFAULTS and build().
"""

from __future__ import annotations

import keras

from dfd.models.backbones import BACKBONES, build_backbone, check_frame_size, configure_batch_norm, scaling_layer
from dfd.models.layers import uint8_input

TEMPORAL_HEADS = ("lstm", "mean")

# Keras's own top dropout for EfficientNet (B0 0.2, B4 0.4); 0.2 elsewhere.
_IMAGE_DROPOUT = {"efficientnet_b0": 0.2, "efficientnet_b4": 0.4, "xception": 0.2}


def backbone_defaults(backbone: str) -> dict:
    """The hparams every model on `backbone` has: weights, freezing, batch-norm handling (and MobileNetV2's width)."""
    defaults = {"backbone_weights": "none", "freeze_backbone": False, "freeze_batch_norm": False, "bn_momentum": 0.0}
    if BACKBONES[backbone].alphas:
        defaults["backbone_alpha"] = 1.0
    return defaults


def backbone_part(backbone: str, frame_shape: tuple, hparams: dict, pooling=None):
    """(scaling layer, backbone) of a model's hparams; pops the backbone's hparams from `hparams`."""
    weights = hparams.pop("backbone_weights")
    backbone_model = build_backbone(backbone, frame_shape, weights, pooling=pooling,
                                    alpha=hparams.pop("backbone_alpha", 1.0))
    backbone_model.trainable = not hparams.pop("freeze_backbone")
    configure_batch_norm(backbone_model, freeze=hparams.pop("freeze_batch_norm"), momentum=hparams.pop("bn_momentum"))
    return scaling_layer(backbone, weights), backbone_model


def check_all_used(model_name: str, hparams: dict) -> None:
    """What a builder left of its hparams: nothing (build_model checked names; this catches a builder's slip)."""
    if hparams:
        raise TypeError(f"{model_name} builder did not use hparams {sorted(hparams)}")


class ImageBackboneModel:
    """`name`: backbone → GAP → dropout → Dense(1, sigmoid)."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self.DEFAULTS = {**backbone_defaults(backbone), "dropout": _IMAGE_DROPOUT.get(backbone, 0.2)}

    def build(self, input_shape: tuple, **hparams) -> keras.Model:
        check_frame_size(self.backbone, self.backbone, input_shape)
        scaling, backbone = backbone_part(self.backbone, input_shape, hparams)
        dropout = hparams.pop("dropout")
        check_all_used(self.backbone, hparams)
        pixels = uint8_input(input_shape)
        x = scaling(pixels)
        x = backbone(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="fake_probability")(x)
        return keras.Model(pixels, output, name=self.backbone)


class VideoBackboneModel:
    """`<backbone>_video`: TimeDistributed(backbone + GAP) → LSTM head or temporal mean → Dense(1, sigmoid)."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self.name = f"{backbone}_video"
        # The LSTM head's widths and dropout are cnn_lstm's (the seed's).
        self.DEFAULTS = {**backbone_defaults(backbone), "temporal": "lstm", "lstm_units": 64, "head_units": 64,
                         "dropout": 0.25}

    def build(self, input_shape: tuple, **hparams) -> keras.Model:
        temporal, lstm_units, head_units, dropout = (hparams.pop(key) for key in
                                                     ("temporal", "lstm_units", "head_units", "dropout"))
        if temporal not in TEMPORAL_HEADS:
            raise ValueError(f"temporal must be {' or '.join(map(repr, TEMPORAL_HEADS))}, got {temporal!r}.")
        frame_shape = tuple(input_shape[1:])
        check_frame_size(self.backbone, self.name, frame_shape)
        freeze = hparams["freeze_backbone"]
        hparams["freeze_backbone"] = False   # frozen on the wrapper below instead
        scaling, backbone = backbone_part(self.backbone, frame_shape, hparams, pooling="avg")
        check_all_used(self.name, hparams)
        clips = uint8_input(input_shape, name="clips")
        # Scaling once, for the whole clip, before TimeDistributed.
        x = scaling(clips)
        encoder = keras.layers.TimeDistributed(backbone, name="frame_encoder")
        # Frozen on the wrapper (which freezes what it wraps), so the saved config says so too.
        if freeze:
            encoder.trainable = False
        x = encoder(x)                                    # (B, T, features)
        if temporal == "lstm":
            x = keras.layers.Dropout(dropout, name="frame_dropout")(x)
            # Default activations and no recurrent dropout: the conditions for the fused cuDNN kernel.
            x = keras.layers.LSTM(lstm_units, name="lstm")(x)
            x = keras.layers.Dense(head_units, activation="relu", name="dense")(x)
        else:
            x = keras.layers.GlobalAveragePooling1D(name="temporal_pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="fake_probability")(x)
        return keras.Model(clips, output, name=self.name)
