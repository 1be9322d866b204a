"""`inception_v3`: the seed's transfer-learning model, InceptionV3 + GAP + Dense(1024) + Dense(2, softmax).

23,903,010 parameters (34,432 non-trainable: the batch-norm moving statistics) at 256×256×3, as the
seed reports. ImageNet weights come only from a local file: nothing downloads at run time.
"""

from __future__ import annotations

from pathlib import Path

import keras

from dfd.models.layers import uint8_input

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"

DEFAULTS = {
    "inception_weights": "none",
    "freeze_backbone": False,
    "head_units": 1024,
    "dropout": 0.0,
}


def _resolve_weights(inception_weights) -> str | None:
    if inception_weights in (None, "", "none"):
        return None
    path = Path(inception_weights)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(
            f"InceptionV3 weights file {str(path)!r} does not exist. Download {WEIGHTS_FILE} "
            f"(Keras's ImageNet 'notop' weights, from the keras-applications releases on GitHub) on a machine "
            f"with network access, place it at that path, or pass --inception_weights=none to start from "
            f"random weights.")
    return str(path)


def build(input_shape: tuple, *, inception_weights, freeze_backbone, head_units, dropout) -> keras.Model:
    if min(input_shape[0], input_shape[1]) < 75:
        raise ValueError(f"inception_v3 needs images of at least 75×75, got {input_shape[0]}×{input_shape[1]}.")
    backbone = keras.applications.InceptionV3(
        include_top=False, weights=_resolve_weights(inception_weights), input_shape=tuple(input_shape))
    backbone.trainable = not freeze_backbone
    pixels = uint8_input(input_shape)
    # InceptionV3 was trained on inputs in [-1, 1] (its preprocess_input), not [0, 1].
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")(pixels)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)  # rate 0 (the seed) is a no-op
    output = keras.layers.Dense(2, activation="softmax", dtype="float32", name="class_probabilities")(x)
    return keras.Model(pixels, output, name="inception_v3")
