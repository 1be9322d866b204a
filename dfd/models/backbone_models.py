"""Image and video models on a keras.applications backbone (dfd.models.backbones), one builder each.

Image (`efficientnet_b0`, `efficientnet_b4`, `xception`):
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

from dfd.models.backbones import build_backbone, check_frame_size, scaling_layer
from dfd.models.layers import uint8_input

TEMPORAL_HEADS = ("lstm", "mean")

# Keras's own top dropout for EfficientNet (B0 0.2, B4 0.4); 0.2 elsewhere.
_IMAGE_DROPOUT = {"efficientnet_b0": 0.2, "efficientnet_b4": 0.4, "xception": 0.2}


class ImageBackboneModel:
    """`name`: backbone → GAP → dropout → Dense(1, sigmoid)."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self.DEFAULTS = {"backbone_weights": "none", "freeze_backbone": False,
                         "dropout": _IMAGE_DROPOUT.get(backbone, 0.2)}

    def build(self, input_shape: tuple, *, backbone_weights, freeze_backbone, dropout) -> keras.Model:
        check_frame_size(self.backbone, self.backbone, input_shape)
        backbone = build_backbone(self.backbone, input_shape, backbone_weights)
        backbone.trainable = not freeze_backbone
        pixels = uint8_input(input_shape)
        x = scaling_layer(self.backbone)(pixels)
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
        self.DEFAULTS = {"backbone_weights": "none", "freeze_backbone": False, "temporal": "lstm",
                         "lstm_units": 64, "head_units": 64, "dropout": 0.25}

    def build(self, input_shape: tuple, *, backbone_weights, freeze_backbone, temporal, lstm_units, head_units,
              dropout) -> keras.Model:
        if temporal not in TEMPORAL_HEADS:
            raise ValueError(f"temporal must be {' or '.join(map(repr, TEMPORAL_HEADS))}, got {temporal!r}.")
        frame_shape = tuple(input_shape[1:])
        check_frame_size(self.backbone, self.name, frame_shape)
        backbone = build_backbone(self.backbone, frame_shape, backbone_weights, pooling="avg")
        clips = uint8_input(input_shape, name="clips")
        # Scaling once, for the whole clip, before TimeDistributed.
        x = scaling_layer(self.backbone)(clips)
        encoder = keras.layers.TimeDistributed(backbone, name="frame_encoder")
        # Frozen on the wrapper (which freezes what it wraps), so the saved config says so too.
        encoder.trainable = not freeze_backbone
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
