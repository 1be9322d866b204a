"""`image_cnn`: the seed's first image classifier, a small Conv-Pool stack with a dense head.

The seed shows this network only as a picture; its frozen copy inside the PyTorch CNN+LSTM is listed
layer by layer (Conv 3×3 16, Conv 3×3 32, Conv 5×5 64, each + ReLU + 2×2 max-pool, Dense 256), so the
defaults use those shapes. That also makes a trained image_cnn a drop-in frame CNN for cnn_lstm's
two-stage mode (train it on images of the video's frame size, e.g. 64×64).
"""

from __future__ import annotations

import keras

from dfd.models.layers import conv_feature_extractor, conv_output_size, uint8_input

DEFAULTS = {
    "conv_filters": (16, 32, 64),
    "kernel_sizes": (3, 3, 5),
    "dense_units": 256,
    "dropout": 0.25,
    "l2": 0.0,
    "feature_pooling": "flatten",   # the seed; "global_average": see layers.conv_feature_extractor
}


def check_conv_stack_fits(frame_shape: tuple, kernel_sizes: tuple) -> None:
    """Valid convolutions and pools shrink the frame; refuse sizes that would vanish."""
    if conv_output_size(min(frame_shape[0], frame_shape[1]), kernel_sizes) < 1:
        raise ValueError(f"Frames of {frame_shape[0]}×{frame_shape[1]} are too small for "
                         f"{len(kernel_sizes)} conv blocks with kernel sizes {tuple(kernel_sizes)}: "
                         f"use larger frames, fewer conv_filters or smaller kernel_sizes.")


def build(input_shape: tuple, *, conv_filters, kernel_sizes, dense_units, dropout, l2,
          feature_pooling) -> keras.Model:
    check_conv_stack_fits(input_shape, kernel_sizes)
    pixels = uint8_input(input_shape)
    x = keras.layers.Rescaling(1 / 255, name="rescaling")(pixels)
    x = conv_feature_extractor(input_shape, conv_filters, kernel_sizes, dense_units, l2,
                               feature_pooling)(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 so the sigmoid and the loss stay accurate under mixed precision.
    output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="fake_probability")(x)
    return keras.Model(pixels, output, name="image_cnn")
