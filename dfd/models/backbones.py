"""Pretrained-capable backbones (keras.applications, include_top=False): one table, one way to build them.

    BACKBONES[name] -> Backbone        # constructor, input scaling, weights file, native and minimum size
    scaling_layer(name) -> Rescaling   # uint8 → what the backbone was trained on, first layer of every model
    build_backbone(name, frame_shape, backbone_weights, pooling=None) -> keras.Model
    find_backbone(model) -> layer | None   # the backbone (or its TimeDistributed wrapper) inside a dfd model
    set_backbone_trainable(model, trainable)

Weights (`backbone_weights`):
  "none"      random initialisation.
  "imagenet"  Keras's own download (keras.utils.get_file) into its cache, KERAS_HOME/models (default
              ~/.keras/models), checked against Keras's hash; found there offline afterwards.
  PATH        a local Keras "notop" .h5 file, or a folder holding it under the name in the table (offline
              clusters: download once elsewhere, copy it over). Any compatible weights file is accepted
              (e.g. one saved from a fine-tuned backbone), so no hash is checked.
When neither works the error names the file, the cache folder and the PATH option.

Both weight sources build the backbone through Keras's own `weights="imagenet"` path, so the model is
exactly Keras's ImageNet model whichever way the file arrived. That matters for EfficientNet: with
ImageNet weights Keras adds a per-channel Rescaling after its Normalization layer (the original
implementation's input scaling, keras issue tensorflow/tensorflow#49930) that `weights=PATH` would leave
out, silently feeding a pretrained network inputs it was not trained on. For PATH, the module's
file lookup answers with the local file instead of downloading (`_weights_lookup`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import types
from pathlib import Path

import keras


@dataclasses.dataclass(frozen=True)
class Backbone:
    constructor: str      # keras.applications attribute
    keras_module: str     # the module whose file lookup fetches the weights
    layer_name: str       # the name Keras gives the backbone model (dfd finds the backbone by it)
    scale: float          # uint8 pixels * scale + offset = the backbone's input range
    offset: float
    weights_file: str     # Keras's ImageNet notop file name (its cache name and the PATH folder's file)
    native_size: int      # the input size the ImageNet weights were trained at
    min_size: int         # the smallest input Keras accepts (include_top=False)


BACKBONES = {
    # EfficientNet scales inside the model (Rescaling 1/255 and ImageNet Normalization): it takes 0..255.
    "efficientnet_b0": Backbone("EfficientNetB0", "keras.src.applications.efficientnet", "efficientnetb0",
                                1.0, 0.0, "efficientnetb0_notop.h5", 224, 32),
    "efficientnet_b4": Backbone("EfficientNetB4", "keras.src.applications.efficientnet", "efficientnetb4",
                                1.0, 0.0, "efficientnetb4_notop.h5", 380, 32),
    # Xception and InceptionV3 were trained on [-1, 1] (their preprocess_input), not [0, 1].
    "xception": Backbone("Xception", "keras.src.applications.xception", "xception", 1 / 127.5, -1.0,
                         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 299, 71),
    "inception_v3": Backbone("InceptionV3", "keras.src.applications.inception_v3", "inception_v3", 1 / 127.5, -1.0,
                             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 299, 75),
}

BACKBONE_NAMES = tuple(BACKBONES)


def _spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; valid: {', '.join(BACKBONE_NAMES)}.")
    return BACKBONES[name]


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file keeps downloaded weights: KERAS_HOME/models, ~/.keras/models by default."""
    from keras.src.backend import config
    return Path(config.keras_home()) / "models"


def _recipe(name: str) -> str:
    spec = _spec(name)
    return (f"Either put Keras's ImageNet weights file {spec.weights_file} (download it where the network is "
            f"reachable, e.g. by building the model once with --backbone_weights=imagenet, or from the "
            f"keras-applications releases) into {keras_cache_dir()} and pass --backbone_weights=imagenet, or put "
            f"it anywhere and pass --backbone_weights=PATH (the file, or the folder holding it under that name). "
            f"--backbone_weights=none starts from random weights.")


def resolve_weights(name: str, backbone_weights) -> str | Path | None:
    """None (random), "imagenet", or the local weights file of `backbone_weights` (checked to exist)."""
    if backbone_weights in (None, "", "none"):
        return None
    if backbone_weights == "imagenet":
        return "imagenet"
    spec = _spec(name)
    path = Path(os.path.expanduser(str(backbone_weights)))
    if path.is_dir():
        path = path / spec.weights_file
    if not path.is_file():
        raise ValueError(f"The {name} weights file {str(path)!r} does not exist. " + _recipe(name))
    return path


@contextlib.contextmanager
def _weights_lookup(name: str, local_file: Path | None):
    """While Keras builds backbone `name` with weights="imagenet", answer its file lookup.

    local_file: returned as is (PATH). None: Keras's own get_file (download or cache), whose network
    errors become a ValueError saying what to put where. The lookup is the application module's own
    reference to keras.src.utils.file_utils, swapped for the duration of the build only.
    """
    module = importlib.import_module(_spec(name).keras_module)
    file_utils = module.file_utils

    def get_file(fname, origin=None, **kwargs):
        if local_file is not None:
            return str(local_file)
        try:
            # Looked up at call time, so a test's stub of keras.src.utils.file_utils.get_file applies.
            return file_utils.get_file(fname, origin, **kwargs)
        except Exception as error:   # Keras raises a bare Exception for URL and HTTP errors
            raise ValueError(f"Could not download the ImageNet weights of {name} ({error}). "
                             + _recipe(name)) from error

    module.file_utils = types.SimpleNamespace(get_file=get_file)
    try:
        yield
    finally:
        module.file_utils = file_utils


def check_frame_size(name: str, model_name: str, frame_shape: tuple) -> None:
    spec = _spec(name)
    if min(frame_shape[0], frame_shape[1]) < spec.min_size:
        raise ValueError(f"{model_name} needs frames of at least {spec.min_size}×{spec.min_size} (its ImageNet "
                         f"weights were trained at {spec.native_size}×{spec.native_size}), got "
                         f"{frame_shape[0]}×{frame_shape[1]}: convert the data with a larger --frame_size "
                         f"(videos) or --image_size (images).")


def build_backbone(name: str, frame_shape: tuple, backbone_weights="none", pooling: str | None = None) -> keras.Model:
    """keras.applications backbone `name` (include_top=False) for float frames already scaled by scaling_layer."""
    spec = _spec(name)
    weights = resolve_weights(name, backbone_weights)
    constructor = getattr(keras.applications, spec.constructor)
    arguments = dict(include_top=False, input_shape=tuple(frame_shape), pooling=pooling)
    if weights is None:
        return constructor(weights=None, **arguments)
    with _weights_lookup(name, None if weights == "imagenet" else weights):
        return constructor(weights="imagenet", **arguments)


def scaling_layer(name: str) -> keras.layers.Rescaling:
    """uint8 pixels → the backbone's own input range, cast on the accelerator (the model's first layer)."""
    spec = _spec(name)
    return keras.layers.Rescaling(spec.scale, offset=spec.offset, name="rescaling")


def find_backbone(model: keras.Model):
    """The backbone layer of a dfd model (its TimeDistributed wrapper in a video model), or None."""
    names = {spec.layer_name for spec in BACKBONES.values()}
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
        if inner.name in names:
            return layer
    # One level down: the trainer wraps models behind its augmentation layer (models.augmentation.wrap).
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = find_backbone(layer)
            if found is not None:
                return found
    return None


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freezes or unfreezes the backbone; recompile afterwards. A frozen backbone's batch norm runs in
    inference mode (Keras 3: BatchNormalization with trainable=False uses its moving statistics)."""
    backbone = find_backbone(model)
    if backbone is None:
        raise ValueError(f"Model {model.name!r} has no pretrained-capable backbone "
                         f"({', '.join(BACKBONE_NAMES)}) to freeze or unfreeze.")
    # On the wrapper in video models: it freezes what it wraps, and the saved config says so too.
    backbone.trainable = trainable
