"""MobileNetV2 in torchvision's layout, for torchvision's ImageNet weights (`--backbone_weights=FILE.pth`).

    build_torchvision_layout(frame_shape, alpha, pooling) -> keras.Model    # random weights
    load_torchvision_weights(backbone, state_dict, source)                  # ValueError on any mismatch
    TORCH_SCALE, TORCH_OFFSET                                                # torchvision's normalisation

Same blocks, widths and layer names as keras.applications.MobileNetV2, so everything that looks a layer
up by name (Grad-CAM, freezing) works alike; three differences make it torchvision's network exactly:
- Stride-2 convolutions pad one pixel on every side (torchvision's padding=1). Keras pads the bottom and
  right only ("same", or its correct_pad), which shifts every later feature map by half a pixel: with the
  same weights the two layouts' ImageNet logits differ (tests/test_mobilenet_v2.py measures it).
- Batch norm epsilon 1e-5 (PyTorch's) instead of Keras's 1e-3.
- Inputs normalised as torchvision was trained: x / 255, minus the ImageNet mean, over its std, per
  channel (TORCH_SCALE / TORCH_OFFSET, the model's Rescaling layer), instead of Keras's [-1, 1].
"""

from __future__ import annotations

import keras
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# uint8 x * scale + offset == (x / 255 - mean) / std
TORCH_SCALE = tuple(float(s) for s in 1 / (255 * STD))
TORCH_OFFSET = tuple(float(o) for o in -MEAN / STD)
_EPSILON = 1e-5
# (expansion, output channels, repeats, first stride): the MobileNetV2 paper's table, as torchvision has it.
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))
NAME = "mobilenetv2"


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(x, filters, kernel, stride, name, bn_name, relu=True, depthwise=False):
    if stride == 2:   # torchvision's padding=1 on all four sides, then an unpadded convolution
        x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=f"{name}_pad")(x)
    padding = "valid" if stride == 2 or kernel == 1 else "same"
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=_EPSILON, momentum=0.9, name=bn_name)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _inverted_residual(x, expansion, filters, stride, block):
    prefix = f"block_{block}_" if block else "expanded_conv_"
    channels = x.shape[-1]
    inputs = x
    if expansion != 1:
        x = _conv_bn(x, channels * expansion, 1, 1, f"{prefix}expand", f"{prefix}expand_BN")
    x = _conv_bn(x, None, 3, stride, f"{prefix}depthwise", f"{prefix}depthwise_BN", depthwise=True)
    x = _conv_bn(x, filters, 1, 1, f"{prefix}project", f"{prefix}project_BN", relu=False)
    if stride == 1 and channels == filters:
        x = keras.layers.Add(name=f"{prefix}add")([inputs, x])
    return x


def build_torchvision_layout(frame_shape: tuple, alpha: float = 1.0, pooling: str | None = None) -> keras.Model:
    """MobileNetV2 without its classifier, torchvision's padding and epsilon, for inputs already normalised."""
    inputs = keras.Input(tuple(frame_shape))
    x = _conv_bn(inputs, _make_divisible(32 * alpha), 3, 2, "Conv1", "bn_Conv1")
    block = 0
    for expansion, channels, repeats, first_stride in _BLOCKS:
        for repeat in range(repeats):
            x = _inverted_residual(x, expansion, _make_divisible(channels * alpha), first_stride if repeat == 0 else 1,
                                   block)
            block += 1
    last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = _conv_bn(x, last, 1, 1, "Conv_1", "Conv_1_bn")
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    elif pooling is not None:
        raise ValueError(f"pooling must be None or 'avg', got {pooling!r}")
    return keras.Model(inputs, x, name=NAME)


def _layer_tensors(layer) -> list[tuple[str, callable]]:
    """The state-dict tensors one Keras layer takes, in torchvision's order, with how to convert each."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):      # (C, 1, h, w) -> (h, w, C, 1)
        return [("weight", lambda t: t.transpose(2, 3, 0, 1))]
    if isinstance(layer, keras.layers.Conv2D):               # (out, in, h, w) -> (h, w, in, out)
        return [("weight", lambda t: t.transpose(2, 3, 1, 0))]
    if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, moving mean, moving variance
        same = lambda t: t  # noqa: E731
        return [("weight", same), ("bias", same), ("running_mean", same), ("running_var", same)]
    return []


def load_torchvision_weights(backbone: keras.Model, state_dict: dict, source: str) -> None:
    """Sets `backbone`'s weights from torchvision's MobileNetV2 state dict (its `features.*` tensors, in order).

    Every tensor is checked against the layer it goes to: a file of another architecture or width
    fails with the first tensor that does not fit and what was expected there.
    """
    expected = "torchvision's MobileNetV2 ImageNet state dict (alpha 1.0, e.g. mobilenet_v2-b0353104.pth)"
    tensors = [(name, value) for name, value in state_dict.items()
               if name.startswith("features.") and not name.endswith("num_batches_tracked")]
    position = 0
    for layer in backbone.layers:
        converted = []
        for (suffix, convert), weight in zip(_layer_tensors(layer), layer.weights, strict=True):
            if position >= len(tensors):
                raise ValueError(f"{source} has too few tensors for MobileNetV2: layer {layer.name} has none "
                                 f"left; expected {expected}.")
            name, value = tensors[position]
            position += 1
            value = convert(np.asarray(value, dtype=np.float32))
            if not name.endswith(suffix) or value.shape != tuple(weight.shape):
                raise ValueError(f"{source} does not fit MobileNetV2 (alpha {_alpha_of(backbone)}): tensor {name} "
                                 f"of shape {value.shape} where layer {layer.name} expects a {suffix} of shape "
                                 f"{tuple(weight.shape)}; expected {expected}.")
            converted.append(value)
        if converted:
            layer.set_weights(converted)
    if position != len(tensors):
        raise ValueError(f"{source} has {len(tensors) - position} tensors more than MobileNetV2 takes (from "
                         f"{tensors[position][0]}); expected {expected}.")


def _alpha_of(backbone: keras.Model) -> float:
    return round(backbone.get_layer("Conv1").filters / 32, 2)


def classifier(state_dict: dict) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ImageNet classifier (weight (1000, 1280), bias (1000,)): logits = features @ W.T + b."""
    return state_dict["classifier.1.weight"], state_dict["classifier.1.bias"]
