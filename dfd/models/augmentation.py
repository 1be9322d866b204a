"""Training augmentation on the accelerator: one Keras layer the trainer puts in front of any model.

    augment = DeviceAugment(flip=True, crop=0.2, brightness=0.2, blur=1.5, cutout=0.3)
    model = wrap(model, augment, seed=0)    # uint8 in → ClipAugmentation → the unchanged model
    wrap(model, augment, input_shape=data)  # uint8 in → FrameResize (--input_size) → ClipAugmentation → model
    unwrap(model)                           # the model inside (e.g. to find image_cnn's frame_features)

Why in the model and not in the input pipeline: the host has few cores and every float operation over
every pixel costs it more than reading and decoding the clip (bench pipeline: the flip alone kept P1
at 0.71); on the accelerator the same work is a few fused element-wise kernels per batch.

ClipAugmentation takes uint8 batches, (B, T, H, W, 3) clips or (B, H, W, 3) images, computes in
float32 whatever the global dtype policy (mixed_float16 would round pixel values) and returns uint8,
so the model behind it receives exactly the dtype and value range it was built for. Every random
number is drawn once per clip and broadcast over its frames: a clip is transformed as a whole (per-
frame flips or colour shifts would be a temporal artefact a video model could learn as a fake cue).
Gaussian noise is the exception on purpose: its strength is per clip, the noise itself differs from
frame to frame, as sensor noise does. Images are clips of one frame, each with its own transform.

Written in keras.ops, so it runs on either Keras backend (dfd.backend: tensorflow or torch); only the
per-clip gathers take TensorFlow's own batched gather on TensorFlow (_gather_per_clip says why). Random
numbers come from keras.random: a seed gives the same transforms on one backend, other ones on the other.

In inference (training=False: evaluate, predict, export, validation) the layer returns its input
untouched. It has no weights, only a seed generator's state, so a wrapped model has the parameter
count of the model inside (the seed's cnn_lstm stays at 552,609).

The ops, in the order they run (0 / False turns one off):
  flip        mirror left-right with probability 1/2 (on the uint8 input: flip alone needs no float math).
  crop        random resized crop: a box of height and width drawn from [1 - crop, 1] of the frame's, at
              a random position, resized back to the frame size (bilinear): zoom and shift in one op.
  brightness  add a delta drawn from [-brightness, brightness] × 255.
  contrast    scale around the clip's mean (per channel) by a factor in [1 - contrast, 1 + contrast].
  saturation  blend with the grey image by a factor in [1 - saturation, 1 + saturation].
  hue         rotate the chroma (YIQ space) by a fraction of a turn drawn from [-hue, hue].
  blur        Gaussian blur with a sigma drawn from [0, blur] pixels (separable, reflected borders).
  noise       add Gaussian noise with a standard deviation drawn from [0, noise] × 255.
  cutout      with probability 1/2, fill a box of cutout × the frame's height and width, centred at a
              random point (it may reach past the border), with mid-grey.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from dfd.models import resize

LAYER_NAME = "augmentation"
_FIELDS = ("flip", "crop", "brightness", "contrast", "saturation", "hue", "blur", "noise", "cutout")


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
    """Strength of each on-device op; see the module docstring for what each number means."""

    flip: bool = True
    crop: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    cutout: float = 0.0

    def __post_init__(self):
        for name in ("crop", "brightness", "contrast", "saturation", "cutout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"augment_{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"the hue shift must be in [0, 0.5] of a turn, got {self.hue}")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError(f"augment_noise is a standard deviation as a fraction of 255, in [0, 1); got {self.noise}")
        if not 0.0 <= self.blur <= 10.0:
            raise ValueError(f"augment_blur is the largest blur sigma in pixels, in [0, 10]; got {self.blur}")

    @property
    def enabled(self) -> bool:
        return any(bool(getattr(self, name)) for name in _FIELDS)


@keras.saving.register_keras_serializable(package="dfd")
class ClipAugmentation(keras.layers.Layer):
    """uint8 clips or images → the same, randomly transformed per clip in training, untouched otherwise."""

    def __init__(self, flip=False, crop=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, blur=0.0,
                 noise=0.0, cutout=0.0, seed=None, **kwargs):
        # float32 whatever the global policy: pixel values up to 255 in float16 lose their fractions,
        # and the layer's output is cast back to uint8 anyway.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.augment = DeviceAugment(flip=bool(flip), crop=float(crop), brightness=float(brightness),
                                     contrast=float(contrast), saturation=float(saturation), hue=float(hue),
                                     blur=float(blur), noise=float(noise), cutout=float(cutout))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self.augment))
        config["seed"] = self.seed
        return config

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=False):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def _uniform(self, shape, low, high):
        return keras.random.uniform(shape, minval=low, maxval=high, dtype="float32", seed=self.seed_generator)

    def call(self, inputs, training=False):
        if not training or not self.augment.enabled:
            return inputs
        clips = inputs[:, None] if len(inputs.shape) == 4 else inputs   # images are clips of one frame
        augment = self.augment
        batch = ops.shape(clips)[0]
        per_clip = (batch, 1, 1, 1, 1)
        if augment.flip:
            # On the uint8 clips, before anything else: the default flip-only model then does no float
            # math at all. (Flipping before the crop is the same distribution: crop boxes are symmetric.)
            clips = flip(clips, self._uniform((batch,), 0.0, 1.0) < 0.5)
        if augment == DeviceAugment(flip=augment.flip):
            return clips[:, 0] if len(inputs.shape) == 4 else clips
        x = ops.cast(clips, "float32")
        if augment.crop:
            x = random_resized_crop(x, self._uniform((batch, 4), 0.0, 1.0), augment.crop)
        if augment.brightness:
            x = x + 255.0 * self._uniform(per_clip, -augment.brightness, augment.brightness)
        if augment.contrast:
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)   # per clip and channel
            x = (x - mean) * self._uniform(per_clip, 1.0 - augment.contrast, 1.0 + augment.contrast) + mean
        if augment.saturation:
            grey = ops.sum(x * ops.convert_to_tensor(_LUMA, "float32"), axis=-1, keepdims=True)
            x = grey + (x - grey) * self._uniform(per_clip, 1.0 - augment.saturation, 1.0 + augment.saturation)
        if augment.hue:
            x = rotate_hue(x, self._uniform((batch,), -augment.hue, augment.hue))
        if augment.blur:
            x = gaussian_blur(x, self._uniform(per_clip, 0.0, augment.blur), augment.blur)
        if augment.noise:
            strength = 255.0 * self._uniform(per_clip, 0.0, augment.noise)
            x = x + strength * keras.random.normal(ops.shape(x), seed=self.seed_generator)
        if augment.cutout:
            x = cutout(x, self._uniform((batch, 3), 0.0, 1.0), augment.cutout)
        out = ops.cast(ops.clip(ops.round(x), 0.0, 255.0), "uint8")
        return out[:, 0] if len(inputs.shape) == 4 else out


# --------------------------------------------------------------------------
# The ops, on float32 clips (B, T, H, W, C) in [0, 255]; random numbers come in per clip
# --------------------------------------------------------------------------

# Plain tuples, not tensors: a tensor made at import would start TensorFlow's runtime before
# dfd.train can configure a multi-worker strategy ("Collective ops must be configured at program startup").
_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB_TO_YIQ)).tolist()))


def _gather_per_clip(x, indices, axis: int):
    """x (B, ...) indexed along `axis` by indices (B, N), one index list per clip: the same as
    tf.gather(x, indices, axis=axis, batch_dims=1), which TensorFlow gets.

    keras.ops.take_along_axis needs the indices broadcast to the output's full shape and, on
    TensorFlow, moves `axis` last (a transposed copy of the batch) before gathering; TensorFlow's own
    batched gather copies whole rows. On the torch backend take_along_dim broadcasts (B, 1, N, 1, 1)
    indices itself.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, indices, axis=axis, batch_dims=1)
    shape = [1] * len(x.shape)
    shape[0], shape[axis] = -1, indices.shape[1]
    return ops.take_along_axis(x, ops.reshape(indices, shape), axis=axis)


def flip(clips, flipped):
    """Mirrors the clips (B, T, H, W, C) where `flipped` (B,) is True, every frame alike.

    A gather of per-clip column indices, on any dtype: measured on 2 CPU cores (TensorFlow) for 32
    clips of 16x64x64 uint8, 16 ms against 35 ms for where(mask, reverse(x), x) (which computes both
    and selects) and 51 ms for the same in float32. dynamic_partition/stitch was faster still (3 ms)
    but has no XLA kernel, and --jit_compile must keep working.
    """
    shape = ops.shape(clips)
    width = shape[3]
    columns = ops.arange(width, dtype="int32")[None]
    indices = ops.where(flipped[:, None], width - 1 - columns, columns)                 # (B, W)
    rows = ops.reshape(clips, (shape[0], -1, width, shape[4]))                          # (B, T*H, W, C)
    return ops.reshape(_gather_per_clip(rows, indices, axis=2), shape)


def random_resized_crop(clips, uniforms, strength):
    """One box per clip (uniforms (B, 4) in [0, 1): height, width, top, left), the same for all its frames.

    Bilinear resampling by two gathers per axis, as tf.image.crop_and_resize samples (the box's edges
    map onto the first and last pixel), which has no XLA kernel: --jit_compile must keep working.
    """
    height = 1.0 - strength * uniforms[:, 0]
    width = 1.0 - strength * uniforms[:, 1]
    clips = _resample(clips, (1.0 - height) * uniforms[:, 2], height, axis=2)
    return _resample(clips, (1.0 - width) * uniforms[:, 3], width, axis=3)


def _resample(clips, start, extent, axis: int):
    """Linear interpolation along `axis` (2 rows, 3 columns) of [start, start + extent] (fractions, (B,))."""
    size = ops.shape(clips)[axis]
    last = ops.cast(size - 1, "float32")
    coords = (start[:, None] + extent[:, None] * ops.linspace(0.0, 1.0, size)[None]) * last     # (B, size)
    low = ops.floor(coords)
    fraction = coords - low
    low = ops.cast(low, "int32")
    high = ops.minimum(low + 1, size - 1)
    below = _gather_per_clip(clips, low, axis)
    above = _gather_per_clip(clips, high, axis)
    fraction = fraction[:, None, :, None, None] if axis == 2 else fraction[:, None, None, :, None]
    return below + (above - below) * fraction


def rotate_hue(clips, turns):
    """Rotates the chroma plane of YIQ by `turns` (B,) of a full turn; luma is kept."""
    angle = 2.0 * math.pi * turns
    cos, sin, zero, one = ops.cos(angle), ops.sin(angle), ops.zeros_like(angle), ops.ones_like(angle)
    rotation = ops.stack([ops.stack([one, zero, zero], -1), ops.stack([zero, cos, -sin], -1),
                          ops.stack([zero, sin, cos], -1)], axis=1)                     # (B, 3, 3)
    to_yiq = ops.convert_to_tensor(_RGB_TO_YIQ, "float32")
    to_rgb = ops.convert_to_tensor(_YIQ_TO_RGB, "float32")
    matrix = ops.matmul(ops.matmul(to_rgb[None], rotation), to_yiq[None])               # RGB → RGB per clip
    return ops.einsum("bthwc,bdc->bthwd", clips, matrix)


def _reflect_pad(clips, radius: int, axis: int):
    """Reflected borders (the edge pixel is not repeated), as numpy's and TensorFlow's "reflect" pad.

    Mirrored slices, concatenated: ops.pad(mode="reflect") on the torch backend pads only the last
    dimensions of a tensor, and axis 3 of (B, T, H, W, C) is not among them.
    """
    def sliced(begin, end):
        return clips[:, :, begin:end] if axis == 2 else clips[:, :, :, begin:end]

    size = clips.shape[axis]
    before = ops.flip(sliced(1, radius + 1), axis=axis)
    after = ops.flip(sliced(size - radius - 1, size - 1), axis=axis)
    return ops.concatenate([before, clips, after], axis=axis)


def gaussian_blur(clips, sigma, max_sigma: float):
    """Separable Gaussian blur, sigma (B, 1, 1, 1, 1) per clip; the radius is fixed by max_sigma.

    Weighted sums of shifted copies rather than a depthwise convolution: each clip has its own kernel,
    and sums of slices need no static channel count, work under XLA and are 2 × (2r + 1) fused
    multiply-adds, a few for the sigmas used (r = ceil(2 max_sigma)).
    """
    radius = max(1, math.ceil(2.0 * max_sigma))
    offsets = ops.arange(-radius, radius + 1, dtype="float32")
    # sigma -> 0 gives a unit impulse: a clip drawn near 0 is (almost) not blurred.
    weights = ops.exp(-ops.square(offsets) / (2.0 * ops.square(ops.maximum(sigma, 1e-3))))   # (B,1,1,1,2r+1)
    weights = weights / ops.sum(weights, axis=-1, keepdims=True)
    for axis in (2, 3):
        padded = _reflect_pad(clips, radius, axis)
        size = clips.shape[axis]
        total = 0.0
        for tap in range(2 * radius + 1):
            sliced = padded[:, :, tap:tap + size] if axis == 2 else padded[:, :, :, tap:tap + size]
            total = total + weights[..., tap:tap + 1] * sliced
        clips = total
    return clips


def cutout(clips, uniforms, fraction: float, fill: float = 127.5):
    """With probability 1/2 per clip (uniforms (B, 3): apply?, centre y, centre x), a grey box on every frame."""
    shape = ops.shape(clips)
    height, width = ops.cast(shape[2], "float32"), ops.cast(shape[3], "float32")
    rows = ops.arange(shape[2], dtype="float32")[None, :, None]
    columns = ops.arange(shape[3], dtype="float32")[None, None, :]
    centre_y = (uniforms[:, 1] * height)[:, None, None]
    centre_x = (uniforms[:, 2] * width)[:, None, None]
    inside = ((ops.abs(rows + 0.5 - centre_y) < fraction * height / 2)
              & (ops.abs(columns + 0.5 - centre_x) < fraction * width / 2)
              & (uniforms[:, 0] < 0.5)[:, None, None])                                   # (B, H, W)
    return ops.where(inside[:, None, :, :, None], fill, clips)


# --------------------------------------------------------------------------
# Wrapping a model
# --------------------------------------------------------------------------

def wrap(model: keras.Model, augment: DeviceAugment, seed: int | None = None,
         input_shape: tuple | None = None) -> keras.Model:
    """`model` behind a ClipAugmentation layer (same input shape, name and outputs); `model` itself when
    no op is on and nothing is resized, so a run without either saves exactly the model it built.

    input_shape: the data's example shape when the model was built for smaller or larger frames
    (--input_size, dfd.models.resize): a FrameResize layer then comes first, and the augmentation acts
    on the resized frames (fewer pixels to transform, and --augment_blur's pixels are the model's).
    """
    model_shape = tuple(model.inputs[0].shape[1:])
    input_shape = model_shape if input_shape is None else tuple(input_shape)
    if not augment.enabled and input_shape == model_shape:
        return model
    inputs = keras.Input(shape=input_shape, dtype="uint8", name=model.inputs[0].name)
    x = inputs
    if input_shape != model_shape:
        if input_shape[:-3] != model_shape[:-3] or input_shape[-1] != model_shape[-1]:
            raise ValueError(f"a model taking {model_shape} cannot be fed {input_shape} examples by resizing "
                             "frames: only the frame height and width may differ")
        x = resize.FrameResize(model_shape[-3], name=resize.LAYER_NAME)(x)
    if augment.enabled:
        x = ClipAugmentation(**dataclasses.asdict(augment), seed=seed, name=LAYER_NAME)(x)
    return keras.Model(inputs, model(x), name=model.name)


def unwrap(model: keras.Model) -> keras.Model:
    """The model inside a wrap()ped one (e.g. to reach image_cnn's frame_features); others unchanged."""
    layers = getattr(model, "layers", [])
    if any(isinstance(layer, (ClipAugmentation, resize.FrameResize)) for layer in layers):
        inner = [layer for layer in layers if isinstance(layer, keras.Model)]
        if len(inner) == 1:
            return inner[0]
    return model
