"""`cnn_lstm`: TimeDistributed(frame CNN) → LSTM → Dense → Dense(1, sigmoid), the seed's video model.

Defaults follow the seed's PyTorch listing: frame CNN Conv 3×3 16, Conv 3×3 32, Conv 5×5 64 (each with
ReLU and 2×2 max-pool), flatten (1,600 at 64×64), Dense 256; LSTM 64; Dense 64; Dense 1. That is
552,865 parameters in PyTorch and 552,609 in Keras, whose LSTM keeps one bias vector instead of two.

Two modes:
- end to end (default): a fresh frame CNN, trained together with the LSTM (the seed's best result);
- two-stage (`frame_cnn=PATH`, usually with `freeze_frame_cnn=True`): the feature extractor of a trained
  image_cnn (trained on images of the video's frame size) runs inside TimeDistributed, frozen, and only
  the LSTM head learns. The image model's own Rescaling layer is left behind: this model scales the
  whole clip once, before TimeDistributed, and the frame CNN receives floats in [0, 1] as in training.
"""

from __future__ import annotations

from pathlib import Path

import keras

from dfd.keras_archive import check_archive
from dfd.models import augmentation
from dfd.models.image_cnn import check_conv_stack_fits
from dfd.models.layers import conv_feature_extractor, uint8_input
from dfd.run_layout import RunLayout

DEFAULTS = {
    "conv_filters": (16, 32, 64),
    "kernel_sizes": (3, 3, 5),
    "frame_dense_units": 256,
    "lstm_units": 64,
    "head_units": 64,
    "dropout": 0.25,
    "l2": 0.0,
    "feature_pooling": "flatten",   # the seed; "global_average": see layers.conv_feature_extractor
    "frame_cnn": "none",
    "freeze_frame_cnn": False,
}

# Name of the feature-extractor sub-model inside image_cnn (see layers.conv_feature_extractor).
FRAME_FEATURES = "frame_features"


def frame_cnn_file(frame_cnn: str) -> Path:
    """The .keras file of `frame_cnn`: the file itself, or a run directory's model (RunLayout.model_file)."""
    path = Path(frame_cnn)
    if path.is_dir():
        layout = RunLayout(path)
        found = layout.model_file()   # best checkpoint first, as dfd.evaluate and dfd.predict read a run
        if found is None:
            raise ValueError(f"Run directory {str(path)!r} has neither {layout.final_model.name} nor "
                             f"checkpoints/{layout.best_model.name}: train an image_cnn there first "
                             f"(python -m dfd.train --model=image_cnn --run_dir={path}).")
        return found
    if not path.is_file():
        raise ValueError(f"frame_cnn {str(path)!r} is neither an image_cnn run directory nor a .keras file.")
    return path


def load_frame_features(frame_cnn: str, frame_shape: tuple) -> keras.Model:
    """The trained feature extractor (without its Rescaling and its sigmoid head) of an image_cnn."""
    path = frame_cnn_file(frame_cnn)
    # A run trained with on-device augmentation saves the image_cnn behind its augmentation layer.
    check_archive(path)   # sizes from the zip directory before Keras unpacks anything
    image_model = augmentation.unwrap(keras.saving.load_model(path, compile=False, safe_mode=True))
    try:
        features = image_model.get_layer(FRAME_FEATURES)
    except ValueError:
        raise ValueError(f"{str(path)!r} has no {FRAME_FEATURES!r} sub-model: frame_cnn must be a model "
                         f"trained with --model=image_cnn.") from None
    trained_shape = tuple(features.input_shape[1:])
    if trained_shape != tuple(frame_shape):
        raise ValueError(f"The image_cnn in {str(path)!r} takes {trained_shape} frames but the videos have "
                         f"{tuple(frame_shape)} frames: train the image CNN on images of the video's frame size "
                         f"(convert the image data with the same --size).")
    return _follow_global_policy(features)


def _follow_global_policy(model: keras.Model) -> keras.Model:
    """A copy of `model` (same weights) whose layers compute in the current global dtype policy.

    Loaded layers keep the policy they were saved with: an image CNN trained in float32 would otherwise
    stay float32 inside a mixed-precision video model, and be the slowest part of every step.
    """
    policy_name = keras.mixed_precision.global_policy().name

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = policy_name
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def build(input_shape: tuple, *, conv_filters, kernel_sizes, frame_dense_units, lstm_units, head_units,
          dropout, l2, feature_pooling, frame_cnn, freeze_frame_cnn) -> keras.Model:
    if len(input_shape) != 4:
        raise ValueError(f"cnn_lstm takes clips shaped (num_frames, height, width, 3), got {tuple(input_shape)}.")
    frame_shape = tuple(input_shape[1:])
    if frame_cnn in (None, "", "none"):
        if freeze_frame_cnn:
            raise ValueError("freeze_frame_cnn needs frame_cnn=PATH (a trained image_cnn run directory "
                             "or .keras file); without it there is nothing trained to freeze.")
        check_conv_stack_fits(frame_shape, kernel_sizes)
        # conv_filters, kernel_sizes, frame_dense_units and feature_pooling only shape a fresh frame
        # CNN; a loaded one keeps the shapes it was trained with.
        features = conv_feature_extractor(frame_shape, conv_filters, kernel_sizes, frame_dense_units, l2,
                                          feature_pooling)
    else:
        features = load_frame_features(frame_cnn, frame_shape)

    regularizer = keras.regularizers.L2(l2) if l2 else None
    clips = uint8_input(input_shape, name="clips")
    # Scaling once, here, for every frame: the frame CNN inside takes floats in [0, 1].
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(clips)
    frame_layer = keras.layers.TimeDistributed(features, name="frame_cnn")
    # Frozen on the wrapper (which freezes what it wraps), so the saved config says so too.
    frame_layer.trainable = not freeze_frame_cnn
    x = frame_layer(x)
    x = keras.layers.Dropout(dropout, name="frame_dropout")(x)
    # Defaults kept on purpose (tanh, sigmoid, no recurrent dropout, unroll off, bias): the
    # conditions for the fused cuDNN kernel on GPU.
    x = keras.layers.LSTM(lstm_units, kernel_regularizer=regularizer, name="lstm")(x)
    x = keras.layers.Dense(head_units, activation="relu", kernel_regularizer=regularizer, name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="fake_probability")(x)
    return keras.Model(clips, output, name="cnn_lstm")
