"""`inception_v3`: the seed's transfer-learning model, InceptionV3 + GAP + Dense(1024) + Dense(2, softmax).

23,903,010 parameters (34,432 non-trainable: the batch-norm moving statistics) at 256×256×3, as the
seed reports. ImageNet weights: `backbone_weights` = none | imagenet | PATH, as for every backbone
(dfd.models.backbones); the old name `inception_weights` is still accepted (dfd.models.HPARAM_ALIASES).
"""

from __future__ import annotations

import keras

from dfd.models.backbone_models import backbone_defaults, backbone_part, check_all_used
from dfd.models.backbones import check_frame_size
from dfd.models.layers import uint8_input

DEFAULTS = {**backbone_defaults("inception_v3"), "head_units": 1024, "dropout": 0.0}


def build(input_shape: tuple, **hparams) -> keras.Model:
    check_frame_size("inception_v3", "inception_v3", input_shape)
    head_units, dropout = hparams.pop("head_units"), hparams.pop("dropout")
    scaling, backbone = backbone_part("inception_v3", input_shape, hparams)
    check_all_used("inception_v3", hparams)
    pixels = uint8_input(input_shape)
    x = scaling(pixels)   # [-1, 1], InceptionV3's preprocess_input
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)  # rate 0 (the seed) is a no-op
    output = keras.layers.Dense(2, activation="softmax", dtype="float32", name="class_probabilities")(x)
    return keras.Model(pixels, output, name="inception_v3")
