"""A run's best model as one ONNX file for onnxruntime, verified by running it (`dfd.export --format=onnx`).

The file stands alone: input `pixels` uint8 (batch, <training shape>) with a dynamic batch, output
`fake_probability` float32 (batch,), the calibration temperature baked in as in the SavedModel
(dfd.evaluation.serving.serving_model builds both), and in its metadata_props what dfd.predict and
dfd.serve need besides the graph (dfd.evaluation.onnx_model reads them):
  dfd.threshold, dfd.threshold_source     the decision threshold, on the file's (calibrated) scale
  dfd.temperature, dfd.calibration_source the temperature baked in (1.0: raw P(fake))
  dfd.preprocessing                       the PreprocessSpec JSON: predict builds records the same way
  dfd.version, dfd.keras_backend, dfd.source_model

Conversion is Keras's own `model.export(format="onnx")`, whose route Keras 3.15 picks by backend:
  tensorflow  tf2onnx on the serving model's tf.function (the SavedModel export's own trace): every op of
              dfd's models converts (FrameResize's avg-pool and bilinear resize, TimeDistributed, the LSTM,
              the temperature), the batch stays dynamic, and onnxruntime agrees to ~1e-7. Keras pins no
              opset here; tf2onnx's default (15) runs on every onnxruntime since 1.10.
  torch       torch.onnx.export. With a dynamic batch Keras takes the TorchScript exporter (its dynamo
              exporter is tried only for fully static shapes in 3.15 and needs onnxscript), so no
              onnxscript is needed and the batch stays dynamic. Keras's torch variables are parameters that
              require grad and the tracer refuses to bake those in as constants ("Cannot insert a Tensor that
              requires grad as a constant"), so grad is off during the export.
A mixed_float16 run converts too (its float16 layers stay float16 in the graph; measured 1.1e-5 against Keras).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import keras
import numpy as np

import dfd
from dfd.evaluation import loading, onnx_model, serving
from dfd.evaluation.onnx_model import INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME
from dfd.models import resize
from dfd.run_layout import RunLayout

SUFFIX = ".onnx"
# onnxruntime runs its own kernels (convolutions, LSTM): measured differences against Keras were 0 to 6e-8 on
# dfd's models, so 1e-4 is a broken conversion, not rounding.
MAX_ABS_DIFFERENCE = 1e-4
# Except behind a FrameResize (--input_size) whose ratio is not an integer: ONNX's bilinear Resize weights
# differ from tf.image.resize's in the last bits, and rounding back to uint8 then moves a pixel by one grey
# level where the value sits on .5 (measured: 2.1% of pixels for 16->12, 0.5% for 64->24, none for 24->16
# or 32->16, and 1.8e-5 on the tiny test model's P(fake)). A trained model may move more on such pixels.
RESIZED_MAX_ABS_DIFFERENCE = 1e-3


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix != SUFFIX:
        raise ValueError(f"--format=onnx writes one file: give --output a name ending in {SUFFIX}, e.g. "
                         f"{output.with_suffix(SUFFIX) if output.suffix else output / ('model' + SUFFIX)}")
    if output.is_dir():
        raise ValueError(f"--output={output} is a folder; give a new file name ending in {SUFFIX}")
    if not output.absolute().parent.is_dir():
        raise ValueError(f"--output={output}: the folder {output.absolute().parent} does not exist; create it first")
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists; choose a new --output file or pass --overwrite")


@contextlib.contextmanager
def _torch_export_ready(model: keras.Model):
    """Grad off on the torch backend's variables while tracing (see the module doc); nothing elsewhere."""
    if keras.backend.backend() != "torch":
        yield
        return
    values = [variable.value for variable in model.variables]
    required = [value.requires_grad for value in values]
    for value in values:
        value.requires_grad_(False)
    try:
        yield
    finally:
        for value, flag in zip(values, required, strict=True):
            value.requires_grad_(flag)


def convert(serving: keras.Model, path: Path, input_shape: tuple) -> None:
    """Keras's ONNX export of `serving` (uint8 (None, *input_shape) -> P(fake)) into `path`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None,) + input_shape, tf.uint8, name=INPUT_NAME)]
    elif backend == "torch":
        signature = [keras.InputSpec(shape=(None,) + input_shape, dtype="uint8", name=INPUT_NAME)]
    else:
        raise ValueError(f"ONNX export is implemented for the tensorflow and torch backends, not {backend!r}; "
                         "set KERAS_BACKEND=tensorflow")
    with _torch_export_ready(serving):
        serving.export(str(path), format="onnx", verbose=False, input_signature=signature)


def _name_io(graph) -> None:
    """One input `pixels` and one output `fake_probability` with batch axis `batch`, whatever the converter named."""
    [graph_input], [graph_output] = graph.input, graph.output
    old = graph_output.name
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
    graph_output.name = OUTPUT_NAME
    for value in (graph_input, graph_output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def metadata(loaded: loading.LoadedModel) -> dict[str, str]:
    values = {
        "threshold": repr(float(loaded.threshold)), "threshold_source": loaded.threshold_source,
        "temperature": repr(float(loaded.temperature)), "calibration_source": loaded.calibration_source or "",
        "preprocessing": json.dumps(loaded.spec.to_dict()), "version": dfd.__version__,
        "keras_backend": keras.backend.backend(), "source_model": str(loaded.model_path),
    }
    return {METADATA_PREFIX + key: value for key, value in values.items()}


def inexact_resize(model: keras.Model) -> str | None:
    """'HxW->N' when the model starts with a FrameResize at a non-integer ratio (see RESIZED_MAX_ABS_DIFFERENCE)."""
    height, width = model.inputs[0].shape[-3:-1]
    for layer in model.layers:
        if isinstance(layer, resize.FrameResize) and (height % layer.size or width % layer.size):
            return f"{height}x{width}->{layer.size}"
    return None


def export_onnx(run_dir: str | Path, output: str | Path, verbose: bool = True, overwrite: bool = False) -> float:
    """Writes the ONNX file and returns the max abs difference between onnxruntime's and Keras's P(fake)."""
    import onnx

    loaded = loading.load(run_dir)
    output = Path(output)
    _check_output(output, overwrite)
    partial = output.with_name(f".{output.name}.partial")
    try:
        convert(serving.serving_model(loaded.model, loaded.temperature), partial, loaded.input_shape)
        proto = onnx.load(str(partial))
        _name_io(proto.graph)
        for key, value in metadata(loaded).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(partial))
        batch = serving.sample_batch(loaded, RunLayout(run_dir))
        # Scored through the one reader of the format: the metadata just written must read back too.
        difference = float(np.max(np.abs(onnx_model.load(partial).score(batch) - loaded.score(batch))))
        resized = inexact_resize(loaded.model)
        bound = RESIZED_MAX_ABS_DIFFERENCE if resized else MAX_ABS_DIFFERENCE
        if difference > bound:
            raise ValueError(f"onnxruntime disagrees with the Keras model on the exported file (max abs difference "
                             f"{difference:.3g} > {bound:g}); do not serve it")
        os.replace(partial, output)   # only a verified file ever gets the name
    finally:
        partial.unlink(missing_ok=True)
    if verbose:
        print(f"Exported {loaded.model_path} to {output} (ONNX via {keras.backend.backend()}, input uint8 "
              f"{('batch',) + loaded.input_shape}, output P(fake)); threshold {loaded.threshold:.4f} from "
              f"{loaded.threshold_source}")
        if loaded.temperature != 1.0:
            print(f"P(fake) is calibrated: {loaded.calibration_source}, baked into the ONNX graph")
        print(f"onnxruntime vs source model on a batch of {len(batch)}: max abs difference {difference:.3g}"
              + (f" (FrameResize {resized}: ONNX's bilinear resize rounds a few pixels to the next grey level; "
                 f"bound {bound:g})" if resized else ""))
    return difference
