"""An ONNX file written by `dfd.export --format=onnx`, scored with onnxruntime behind LoadedModel's interface.

    loaded = loading.load("model.onnx")   # an OnnxModel: dfd.predict and dfd.serve use it like a Keras run

The graph gives P(fake) with any calibration already baked in; the threshold, temperature and
preprocessing come from the file's metadata_props (dfd.evaluation.onnx_export writes them), so the file
needs nothing beside it. An ONNX graph has no Keras layers: Grad-CAM (--explain) needs the run's
model.keras, and evaluate's re-calibration (set_temperature) needs the run directory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation.loaded_model import LoadedModel

# The graph's input and output names and the prefix of dfd's metadata_props (dfd.evaluation.onnx_export
# writes them; this module is their reader).
INPUT_NAME = "pixels"
OUTPUT_NAME = "fake_probability"
METADATA_PREFIX = "dfd."


@dataclasses.dataclass
class OnnxGraph:
    """What callers read of `LoadedModel.model` (its name), and the session that runs the graph.

    `layers` is empty: there is nothing Grad-CAM can walk (dfd.evaluation.explain finds no feature map).
    """
    name: str
    session: object
    layers: tuple = ()


@dataclasses.dataclass
class OnnxModel(LoadedModel):
    model: OnnxGraph

    def set_temperature(self, temperature: float) -> None:
        raise ValueError(f"{self.model_path} has its temperature ({self.temperature}) baked into the graph; "
                         "calibrate the run directory (dfd.evaluate --calibrate) and export it again")

    @property
    def input_shape(self) -> tuple:
        return tuple(int(size) for size in self.model.session.get_inputs()[0].shape[1:])

    def score(self, frames: np.ndarray) -> np.ndarray:
        """P(fake) per example of a uint8 batch in the model's input shape, float64 (B,)."""
        outputs = self.model.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(frames, dtype=np.uint8)})
        return np.asarray(outputs[0], dtype=np.float64).reshape(len(frames))


def _metadata(path: Path, proto_metadata: dict) -> dict:
    values = {key[len(METADATA_PREFIX):]: value for key, value in proto_metadata.items()
              if key.startswith(METADATA_PREFIX)}
    if "preprocessing" not in values or "threshold" not in values:
        raise ValueError(f"{path} is not an ONNX file written by dfd.export --format=onnx (no dfd threshold and "
                         "preprocessing in its metadata); export the run with it")
    return values


def load(path: str | Path) -> OnnxModel:
    """The ONNX file, its preprocessing and its decision threshold (from its metadata)."""
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("scoring an ONNX file needs onnxruntime: pip install 'dfd[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no ONNX file at {path}")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:   # noqa: BLE001 - onnxruntime raises its own classes for every kind of bad file
        raise ValueError(f"{path} could not be loaded by onnxruntime ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); export the run again") from None
    meta = session.get_modelmeta()
    values = _metadata(path, meta.custom_metadata_map)
    try:
        spec = PreprocessSpec.from_dict(json.loads(values["preprocessing"]))
        threshold, temperature = float(values["threshold"]), float(values.get("temperature", "1.0"))
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: its dfd metadata is damaged ({type(error).__name__}: {error}); export the run "
                         "again") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{path}: threshold {threshold} is not a probability in [0, 1]; export the run again")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ValueError(f"{path} does not have dfd's input {INPUT_NAME!r} and output {OUTPUT_NAME!r}; export the "
                         "run again with dfd.export --format=onnx")
    source = values.get("threshold_source") or "?"
    return OnnxModel(OnnxGraph(path.stem, session), spec, threshold,
                     f"{path} metadata ({source})", path, temperature, values.get("calibration_source") or None)
