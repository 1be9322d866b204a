"""Self-blended pseudo-fakes (SBI): real training faces become fakes on the fly.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022). A copy of
a real face (the source) is jittered in colour, sharpness and scale/position, then blended back
into the same face (the target) through a soft mask around the face; the result is labelled fake.
The blend leaves what every face swap leaves (a boundary, a colour and sharpness mismatch, a
slight misalignment) without any identity change, so a detector trained on it learns those
generic traces instead of one manipulation method's fingerprint, and can train from real
videos alone (--train_classes=real).

    clips, labels = apply(clips, labels, keypoints, fraction=0.5, seed=seed_pair)   # in tf.data
    blended, masks = self_blend(clips, keypoints, seed_pair)                       # the transform

Everything is vectorised TensorFlow on whole decoded batches of uint8 clips (B, T, H, W, 3) and
returns uint8: it runs inside the training pipeline's map, right after decoding (it changes
labels, so it cannot live in the model). One clip draws one set of random parameters and every
frame of it gets the same transform and mask shape: the frames are aligned crops of one face
track, and a mask that flickered from frame to frame would be a cue no real fake has. The mask
follows each frame's keypoints, as a real swap follows the face.

The mask: an ellipse fitted to the five MTCNN keypoints (schema.FACE_KEYPOINTS), rotated with the
eye line, centred between the eyes and the mouth, about the size of the area a face swap
replaces (brows to chin, cheek to cheek); randomly scaled per axis, its boundary deformed by
three random low angular harmonics (the smooth wobble of SBI's elastic transform, without a
per-pixel displacement field), and softened by a ramp of random width inside the boundary (the
effect of SBI's Gaussian blur of the hard mask, with no convolution). It is then multiplied by a
random blend ratio from SBI's set {0.25, 0.5, 0.75, 1, 1, 1}. The ramp lies inside the boundary,
so the mask is exactly 0 outside it and those pixels are bit-for-bit the original.

Records without keypoints (converted without --face_crop, e.g. pre-cropped face images, or
converted before keypoints were stored; schema.KEYPOINTS_ABSENT) use FALLBACK_KEYPOINTS: where
the five points sit in a face crop made with dfd's default margin (1.3), so the mask is a
centred ellipse of the crop. Pre-cropped face datasets frame faces about the same way.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

METHODS = ("none", "sbi")

# Left eye, right eye, nose, mouth left, mouth right as (x, y) in a face crop of margin 1.3:
# the astronaut photo's keypoints in dfd's crop (tests/test_convert_faces.py), made symmetric.
FALLBACK_KEYPOINTS = ((0.35, 0.39), (0.65, 0.39), (0.50, 0.56), (0.36, 0.65), (0.64, 0.65))

# The ellipse, in units of the eye distance (across) and the eye-to-mouth distance (down): its
# centre lies this far from the eyes towards the mouth, and its half-axes are these multiples.
# On the astronaut crop this spans brows to chin and cheek to cheek; at its largest (scale and
# wobble at their maximum) it still lies inside MTCNN's face box (tests/test_pseudo_fakes.py).
CENTRE_TOWARDS_MOUTH = 0.5
HALF_WIDTH_PER_EYE_DISTANCE = 0.8
HALF_HEIGHT_PER_EYE_MOUTH = 1.1

# Random ranges, per clip. SBI's own: RGB shift of +-20 (p=0.3), brightness and contrast +-0.1,
# scale 0.95..1/0.95, shift +-3 % across and +-1.5 % down, blend ratio {.25, .5, .75, 1, 1, 1}.
# Its hue/saturation/value limits of +-0.3 act on uint8 images in OpenCV units, i.e. almost
# nothing; here a small hue rotation and saturation change stand in for them.
RGB_SHIFT = 20.0 / 255.0
RGB_SHIFT_PROBABILITY = 0.3
BRIGHTNESS = 0.1
CONTRAST = 0.1
HUE_DEGREES = 5.0
SATURATION = 0.1
SHARPNESS = (0.3, 1.0)           # unsharp amount (sharpen) or blur weight, half the clips each
SCALE = (0.95, 1 / 0.95)
SHIFT = (0.03, 0.015)            # fraction of width, of height
MASK_SCALE = (0.8, 1.0)          # per axis
MASK_WOBBLE = 0.04               # amplitude of each of the 3 angular harmonics (radius units)
MASK_SOFTNESS = (0.1, 0.4)       # width of the soft ramp inside the boundary (radius units)
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)

# RGB <-> YIQ: hue is a rotation of the (I, Q) plane and saturation its length, so both are one
# 3x3 matrix per clip (no HSV round trip over every pixel).
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PseudoFakes:
    """--pseudo_fakes and --pseudo_fake_fraction: which real training clips become fakes."""

    method: str = "none"
    fraction: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"pseudo_fakes must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"pseudo_fake_fraction must be in (0, 1], got {self.fraction}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def expected_counts(self, num_real: int, num_fake: int) -> tuple[float, float]:
        """(real, fake) clips an epoch sees on average once real clips turn into pseudo-fakes."""
        if not self.enabled:
            return float(num_real), float(num_fake)
        return num_real * (1.0 - self.fraction), num_fake + num_real * self.fraction


NO_PSEUDO_FAKES = PseudoFakes()


def apply(clips: tf.Tensor, labels: tf.Tensor, keypoints: tf.Tensor, fraction: float,
          seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Turns each real clip (label 0) into a self-blended fake (label 1) with probability `fraction`.

    clips uint8 (B, T, H, W, 3); labels int (B,); keypoints float32 (B, T * 10) as parsed (or
    (B, T, 5, 2)); seed: int (2,), a stateless seed. Fakes are left alone, so the fraction is of
    the real clips: with --train_classes=real and 0.5 a batch is half real, half pseudo-fake on
    average, the balance SBI trains with, and with real fakes in the data they keep their share.
    Only the chosen clips are transformed (gathered, blended, scattered back): the others cost
    nothing but the copy.
    """
    choose_seed, blend_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    batch = tf.shape(clips)[0]
    chosen = (labels == 0) & (tf.random.stateless_uniform([batch], choose_seed) < fraction)
    indices = tf.where(chosen)
    blended, _ = self_blend(tf.gather_nd(clips, indices), tf.gather_nd(keypoints, indices), blend_seed)
    clips = tf.tensor_scatter_nd_update(clips, indices, blended)
    labels = tf.tensor_scatter_nd_update(labels, indices, tf.ones(tf.shape(indices)[:1], labels.dtype))
    return clips, labels


def self_blend(clips: tf.Tensor, keypoints: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Every clip blended with a jittered copy of itself: (uint8 clips, float32 masks (N, T, H, W, 1)).

    clips uint8 (N, T, H, W, 3); keypoints float32 (N, T * 10) or (N, T, 5, 2), normalised, with
    schema.KEYPOINTS_ABSENT where missing; seed int (2,). The same seed gives the same result.
    """
    clips = tf.convert_to_tensor(clips)
    shape = tf.shape(clips)
    num_clips, num_frames, height, width = shape[0], shape[1], shape[2], shape[3]
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 14))
    per_clip = _Draws(num_clips, seeds)

    target = tf.cast(clips, tf.float32) / 255.0
    source = _jitter_geometry(target, per_clip)
    source = _jitter_sharpness(source, per_clip)
    source = _jitter_colour(source, per_clip)

    masks = blend_masks(keypoints, num_frames, height, width, per_clip)[..., tf.newaxis]
    blended = target + masks * (source - target)
    # Where the mask is 0 this is the target itself, exactly (integers / 255 times 1, plus 0).
    out = tf.cast(tf.clip_by_value(tf.round(blended * 255.0), 0.0, 255.0), tf.uint8)
    return out, masks


class _Draws:
    """The random parameters of each clip, drawn statelessly from one seed each."""

    def __init__(self, num_clips, seeds):
        def uniform(seed, low, high, extra=()):
            return tf.random.stateless_uniform(tf.stack([num_clips, *extra]), seed, low, high)

        sign = tf.where(uniform(seeds[0], 0.0, 1.0) < 0.5, -1.0, 1.0)
        self.sharpness = sign * uniform(seeds[1], *SHARPNESS)        # < 0 blurs, > 0 sharpens
        self.scale = uniform(seeds[2], *SCALE)
        self.shift = uniform(seeds[3], -1.0, 1.0, [2]) * SHIFT
        rgb_on = tf.cast(uniform(seeds[4], 0.0, 1.0) < RGB_SHIFT_PROBABILITY, tf.float32)
        self.rgb_shift = uniform(seeds[5], -RGB_SHIFT, RGB_SHIFT, [3]) * rgb_on[:, None]
        self.brightness = uniform(seeds[6], -BRIGHTNESS, BRIGHTNESS)
        self.contrast = uniform(seeds[7], 1 - CONTRAST, 1 + CONTRAST)
        self.hue = uniform(seeds[8], -HUE_DEGREES, HUE_DEGREES) * (math.pi / 180)
        self.saturation = uniform(seeds[9], 1 - SATURATION, 1 + SATURATION)
        self.mask_scale = uniform(seeds[10], *MASK_SCALE, [2])
        self.wobble = tf.concat([uniform(seeds[11], -MASK_WOBBLE, MASK_WOBBLE, [3]),
                                 uniform(seeds[12], 0.0, 2 * math.pi, [3])], axis=1)   # amplitudes, phases
        softness_and_ratio = uniform(seeds[13], 0.0, 1.0, [2])
        self.softness = MASK_SOFTNESS[0] + softness_and_ratio[:, 0] * (MASK_SOFTNESS[1] - MASK_SOFTNESS[0])
        ratio_index = tf.minimum(tf.cast(softness_and_ratio[:, 1] * len(BLEND_RATIOS), tf.int32),
                                 len(BLEND_RATIOS) - 1)
        self.blend_ratio = tf.gather(tf.constant(BLEND_RATIOS, tf.float32), ratio_index)


def _resample_axis(clips, scale, shift, axis: int):
    """Scale about the centre and shift along one image axis (2: height, 3: width), bilinear.

    Output pixel i reads the source at (i - c) / scale + c - shift (reflected at the borders),
    interpolating its two neighbours: two gathers along the axis, per clip. The warp is only a
    scale and a shift, so it separates into the two axes; measured against one
    ImageProjectiveTransformV3 per frame (7 ms per 16x64x64 clip), the two axes cost ~1.5 ms.
    """
    size = tf.shape(clips)[axis]
    last = tf.cast(size - 1, tf.float32)
    positions = tf.cast(tf.range(size), tf.float32)[None, :]
    source = (positions - last / 2) / scale[:, None] + last / 2 - shift[:, None]
    source = tf.abs(source)                                           # reflect at 0 ...
    source = last - tf.abs(last - source)                             # ... and at the far edge
    source = tf.clip_by_value(source, 0.0, last)
    low = tf.floor(source)
    weight = source - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, size - 1)
    weight_shape = [-1, 1, 1, 1, 1]
    weight_shape[axis] = size
    weight = tf.reshape(weight, tf.stack(weight_shape))
    low_values = tf.gather(clips, low, axis=axis, batch_dims=1)
    high_values = tf.gather(clips, high, axis=axis, batch_dims=1)
    return low_values + weight * (high_values - low_values)


def _jitter_geometry(clips, draws: _Draws):
    """The clip's scale about the centre and shift, the same for every frame."""
    height = tf.cast(tf.shape(clips)[2], tf.float32)
    width = tf.cast(tf.shape(clips)[3], tf.float32)
    clips = _resample_axis(clips, draws.scale, draws.shift[:, 1] * height, axis=2)
    return _resample_axis(clips, draws.scale, draws.shift[:, 0] * width, axis=3)


def _jitter_sharpness(clips, draws: _Draws):
    """x + a (x - low(x)): a < 0 blurs (a = -1 is low(x)), a > 0 sharpens (unsharp masking).

    low(x) is the clip downscaled 2x by averaging and upscaled back (bilinear), the blur of SBI's
    RandomDownScale. Measured: ~3x cheaper than a 5x5 depthwise convolution on CPU.
    """
    shape = tf.shape(clips)
    frames = tf.reshape(clips, tf.concat([[-1], shape[2:]], 0))
    low = tf.image.resize(tf.nn.avg_pool2d(frames, 2, 2, "VALID"), shape[2:4], method="bilinear")
    low = tf.reshape(low, shape)
    amount = draws.sharpness[:, None, None, None, None]
    return clips + amount * (clips - low)


def _jitter_colour(clips, draws: _Draws):
    """Hue rotation, saturation, contrast, brightness and RGB shift as one 3x3 matrix + offset per clip."""
    cos, sin = tf.cos(draws.hue), tf.sin(draws.hue)
    ones, zeros = tf.ones_like(cos), tf.zeros_like(cos)
    saturation = draws.saturation
    # In YIQ: keep Y, rotate and scale (I, Q).
    yiq = tf.reshape(tf.stack([ones, zeros, zeros,
                               zeros, saturation * cos, -saturation * sin,
                               zeros, saturation * sin, saturation * cos], axis=1), [-1, 3, 3])
    matrix = tf.einsum("ij,njk,kl->nil", _YIQ_TO_RGB, yiq, _RGB_TO_YIQ) * draws.contrast[:, None, None]
    offset = draws.rgb_shift + draws.brightness[:, None]
    return tf.einsum("nthwc,ndc->nthwd", clips, matrix) + offset[:, None, None, None, :]


def face_keypoints(keypoints: tf.Tensor, num_frames) -> tf.Tensor:
    """Parsed keypoints (N, T * 10) to (N, T, 5, 2), with FALLBACK_KEYPOINTS where absent."""
    points = tf.reshape(tf.cast(keypoints, tf.float32), tf.stack([-1, num_frames, 5, 2]))
    absent = tf.reduce_any(points < 0.0, axis=[2, 3], keepdims=True)
    return tf.where(absent, tf.constant(FALLBACK_KEYPOINTS, tf.float32), points)


def blend_masks(keypoints, num_frames, height, width, draws: _Draws) -> tf.Tensor:
    """Soft masks (N, T, H, W) in [0, blend ratio]: the deformed, softened face ellipse of each frame."""
    points = face_keypoints(keypoints, num_frames)
    size = tf.cast(tf.stack([width, height]), tf.float32)
    points = points * size                                            # pixels, (N, T, 5, 2)
    eyes = (points[:, :, 0] + points[:, :, 1]) / 2
    mouth = (points[:, :, 3] + points[:, :, 4]) / 2
    across = points[:, :, 1] - points[:, :, 0]
    eye_distance = tf.maximum(tf.norm(across, axis=-1), 0.05 * size[0])
    unit_across = across / eye_distance[..., None]
    unit_down = tf.stack([-unit_across[..., 1], unit_across[..., 0]], axis=-1)   # image y points down
    # A turned or tilted face can bring the mouth close to the eye line: keep a plausible height.
    eye_mouth = tf.maximum(tf.reduce_sum((mouth - eyes) * unit_down, axis=-1), 0.5 * eye_distance)
    centre = eyes + CENTRE_TOWARDS_MOUTH * eye_mouth[..., None] * unit_down
    half_width = HALF_WIDTH_PER_EYE_DISTANCE * eye_distance * draws.mask_scale[:, None, 0]
    half_height = HALF_HEIGHT_PER_EYE_MOUTH * eye_mouth * draws.mask_scale[:, None, 1]

    # Pixel centres relative to each frame's ellipse centre, in the ellipse's own axes.
    xs = tf.cast(tf.range(width), tf.float32) + 0.5
    ys = tf.cast(tf.range(height), tf.float32) + 0.5
    dx = xs[None, None, None, :] - centre[..., 0, None, None]         # (N, T, 1, W)
    dy = ys[None, None, :, None] - centre[..., 1, None, None]         # (N, T, H, 1)
    u = (dx * unit_across[..., 0, None, None] + dy * unit_across[..., 1, None, None]) / half_width[..., None, None]
    v = (dx * unit_down[..., 0, None, None] + dy * unit_down[..., 1, None, None]) / half_height[..., None, None]
    radius = tf.sqrt(u * u + v * v)
    angle = tf.atan2(v, u)
    boundary = tf.ones_like(radius)
    for harmonic in range(3):
        amplitude = draws.wobble[:, harmonic, None, None, None]
        phase = draws.wobble[:, 3 + harmonic, None, None, None]
        boundary += amplitude * tf.cos((harmonic + 2) * angle + phase)
    ramp = tf.clip_by_value((boundary - radius) / draws.softness[:, None, None, None], 0.0, 1.0)
    smooth = ramp * ramp * (3.0 - 2.0 * ramp)                         # smoothstep: no kink at either end
    return smooth * draws.blend_ratio[:, None, None, None]
