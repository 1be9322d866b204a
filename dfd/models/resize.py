"""On-device frame resizing (`--input_size=N`): the model sees N×N frames whatever size the data stores.

    FrameResize(size=96)   # uint8 (B, H, W, 3) or (B, T, H, W, 3) → uint8 (…, 96, 96, 3)

The trainer puts it in front of the model (dfd.models.augmentation.wrap), so the saved model takes the
data's frames and evaluate, predict and export (which all feed the saved model the records' own size)
stay consistent with training. It is how dfd.tune searches the frame size without converting the data
again per size.

uint8 in, uint8 out, computed in float32: the model behind it keeps the input dtype and value range it
was built for (its own first layer scales), and the augmentation layer (which takes uint8) can follow.
A frame that is not square becomes N×N (its aspect ratio changes, as for every frame alike).

Downscaling is area-averaged by the integer factor floor(H / N) first (an average pool), then bilinear to
N: bilinear alone from 2× or more skips pixels (aliasing), and tf.image.resize's antialias=True runs a
ScaleAndTranslate op that has no XLA kernel (measured: --jit_compile fails to compile it on CPU), while
average pooling and bilinear resizing compile. No weights: a wrapped model has the inner model's
parameter count.
"""

from __future__ import annotations

import keras
from keras import ops

LAYER_NAME = "input_resize"


def resized_shape(input_shape: tuple, size: int) -> tuple:
    """input_shape ((H, W, 3) or (T, H, W, 3)) with its frames N×N; unchanged for size 0."""
    input_shape = tuple(input_shape)
    if not size:
        return input_shape
    return (*input_shape[:-3], int(size), int(size), input_shape[-1])


@keras.saving.register_keras_serializable(package="dfd")
class FrameResize(keras.layers.Layer):
    """uint8 images (B, H, W, C) or clips (B, T, H, W, C) → the same with size×size frames, uint8."""

    def __init__(self, size: int, **kwargs):
        kwargs["dtype"] = "float32"   # pixel values up to 255 lose their fractions in float16
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"the input size must be at least 1 pixel, got {size}")
        self.size = int(size)

    def get_config(self):
        return {**super().get_config(), "size": self.size}

    def compute_output_shape(self, input_shape):
        return resized_shape(input_shape, self.size)

    def compute_output_spec(self, inputs, **kwargs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="uint8")

    def call(self, inputs):
        # Model inputs have static shapes but the batch: (B*T, H, W, C) frames, then back.
        height, width, channels = inputs.shape[-3:]
        x = ops.cast(ops.reshape(inputs, (-1, height, width, channels)), "float32")
        factor = min(height, width) // self.size
        if factor >= 2:
            x = ops.average_pool(x, factor, factor, "valid", data_format="channels_last")
        # Half-pixel centres and no antialiasing on every backend (tf.image.resize's bilinear; torch's
        # interpolate with align_corners=False), so a model scores alike after moving between backends.
        x = ops.image.resize(x, (self.size, self.size), interpolation="bilinear", antialias=False,
                             data_format="channels_last")
        x = ops.cast(ops.clip(ops.round(x), 0.0, 255.0), "uint8")
        return ops.reshape(x, (-1, *inputs.shape[1:-3], self.size, self.size, channels))
