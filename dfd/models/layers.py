"""Building blocks shared by the models: the input scaling and the frame feature extractor."""

from __future__ import annotations

import keras

# How the last conv map becomes the frame features (see conv_feature_extractor).
FEATURE_POOLINGS = ("flatten", "global_average")


def uint8_input(shape: tuple, name: str = "pixels") -> keras.KerasTensor:
    # Batches leave the input pipeline as uint8 (4x less host→device traffic than float32);
    # the Rescaling layer right after it casts and scales on the accelerator.
    return keras.Input(shape=tuple(shape), dtype="uint8", name=name)


def conv_output_size(size: int, kernel_sizes) -> int:
    """The side a frame side of `size` has after conv_feature_extractor's blocks (< 1: it vanished)."""
    for kernel_size in kernel_sizes:
        size = (size - kernel_size + 1) // 2   # "valid" convolution, then a 2x2 max-pool
    return size


def conv_feature_extractor(
    frame_shape: tuple,
    conv_filters: tuple,
    kernel_sizes: tuple,
    dense_units: int,
    l2: float,
    pooling: str = "flatten",
    name: str = "frame_features",
) -> keras.Model:
    """Conv-ReLU-MaxPool blocks, flatten, Dense(dense_units, relu): float [0, 1] frames → features.

    pooling: "flatten" (the seed) keeps every position, so the Dense layer's size grows with the
    last feature map: fewer conv blocks make the model *larger*. "global_average" averages each
    channel over the map instead, so the Dense layer sees only the last block's filter count and
    fewer blocks really are a simpler model (the tuner searches both).

    A model of its own (not inlined layers) so that a trained image_cnn can hand exactly this part
    to cnn_lstm's TimeDistributed: it takes already-scaled floats, so the video model scales once.
    No dropout inside: dropout sits after it, so a frozen copy stays deterministic.
    """
    regularizer = keras.regularizers.L2(l2) if l2 else None
    frames = keras.Input(shape=tuple(frame_shape), name="scaled_frame")
    x = frames
    for index, (filters, kernel_size) in enumerate(zip(conv_filters, kernel_sizes, strict=True)):
        # "valid" padding, as in the seed's PyTorch listing: 64×64 → 1,600 features after 3 blocks.
        x = keras.layers.Conv2D(filters, kernel_size, activation="relu", kernel_regularizer=regularizer,
                                name=f"conv{index}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    elif pooling == "global_average":
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    else:
        raise ValueError(f"feature_pooling must be {' or '.join(map(repr, FEATURE_POOLINGS))}, got {pooling!r}")
    features = keras.layers.Dense(dense_units, activation="relu", kernel_regularizer=regularizer,
                                  name="dense")(x)
    return keras.Model(frames, features, name=name)
