"""Loading a trained model with what it needs to be fed: run directories and export directories alike.

Both hold a Keras file, preprocessing.json and (after dfd.evaluate) threshold.json and calibration.json:
  run dir     checkpoints/best.keras (else model.keras), preprocessing.json, threshold.json, calibration.json
  export dir  model.keras, preprocessing.json, threshold.json, calibration.json, saved_model.pb (for TF Serving)
  FILE.onnx   dfd.export --format=onnx: all of it in one file (dfd.evaluation.onnx_model, scored by onnxruntime)
A calibration.json (dfd.evaluate --calibrate) makes every score the temperature-scaled probability.

Models are always loaded in Keras safe mode: a `.keras` file can carry a Lambda
layer, i.e. pickled Python code that runs on load; dfd models never need one.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import keras

import dfd.models  # noqa: F401  (importing it registers dfd's Keras objects, which load_model needs)
from dfd.atomic_files import write_json
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import calibration
from dfd.evaluation.loaded_model import LoadedModel
from dfd.keras_archive import check_archive
from dfd.run_layout import RunLayout

THRESHOLD_FILE = "threshold.json"
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_MODEL_FILE = "model.keras"
DEFAULT_THRESHOLD = 0.5


def _refuse_unknown_class(path: Path, error: Exception) -> None:
    # Keras's message goes on with the layer's whole config: 1,500 characters for one custom layer.
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", str(error))
    if unknown:
        raise ValueError(f"{path}: the model file uses a class dfd does not know: {unknown.group(1)}; was it saved "
                         "by another program or another dfd version? dfd loads its own models (dfd.train)") from None


def load_keras_model(path: str | Path) -> keras.Model:
    """keras.saving.load_model in safe mode, without the training state; Lambda layers are refused, and so
    is an archive that would unpack to more than a model needs (dfd.keras_archive)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no model file at {path}")
    check_archive(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        if "lambda" in str(error).lower() or "safe_mode" in str(error):
            raise ValueError(
                f"{path} contains a Lambda layer (arbitrary Python code run at load time); dfd loads models "
                "in Keras safe mode only and refuses it. Rebuild the model from standard layers "
                "(dfd.models has no Lambda layers) and retrain or re-save it.") from error
        raise ValueError(f"{path} could not be loaded as a Keras model: {error}") from error
    except (OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
        _refuse_unknown_class(path, error)
        raise ValueError(f"{path} could not be loaded as a Keras model ({type(error).__name__}: {error}); "
                         "re-save or retrain the model") from error


def read_threshold_file(directory: str | Path) -> dict | None:
    """directory/threshold.json, checked, with every key (files written before "chosen_on" or "temperature"
    existed read as "" and 1.0); None without one. The one reader of the format (write_threshold writes it)."""
    path = Path(directory) / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
        threshold = float(values["threshold"])
        temperature = float(values.get("temperature", 1.0))
    except (ValueError, KeyError, TypeError, AttributeError) as error:   # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a valid threshold file ({type(error).__name__}: {error}); re-run "
                         "dfd.evaluate --threshold=val_eer to choose one, or delete it to use 0.5") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{path}: threshold {threshold} is not a probability in [0, 1]; re-run dfd.evaluate "
                         "to choose one, or delete it to use 0.5")
    return {"threshold": threshold, "method": str(values.get("method", "?")),
            "chosen_on": str(values.get("chosen_on", "")), "temperature": temperature}


def write_threshold(directory: str | Path, threshold: float, method: str, chosen_on: str, temperature: float) -> Path:
    """directory/threshold.json, the one writer (dfd.evaluate, dfd.export): the decision threshold, how
    and on what it was chosen, and the temperature of the scores it applies to (see read_threshold)."""
    path = Path(directory) / THRESHOLD_FILE
    write_json(path, {"threshold": float(threshold), "method": method, "chosen_on": chosen_on,
                      "temperature": float(temperature)})
    return path


def read_threshold(directory: Path, temperature: float = 1.0) -> tuple[float, str]:
    """The threshold on the scale of scores calibrated with `temperature`, and where it came from.

    threshold.json records the temperature its scores had ("temperature", 1.0 when absent): a threshold
    chosen before calibrating (or after, with calibration.json since deleted) is mapped to make the
    same decisions.
    """
    values = read_threshold_file(directory)
    if values is None:
        return DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD} (no {THRESHOLD_FILE}: run dfd.evaluate to choose one)"
    threshold, chosen_with = values["threshold"], values["temperature"]
    if chosen_with != temperature:
        threshold = calibration.to_calibrated_threshold(threshold, temperature / chosen_with)
    return threshold, f"{Path(directory) / THRESHOLD_FILE} ({values['method']})"


def model_file(directory: str | Path) -> Path:
    """The Keras file of a run directory or an export directory (RunLayout.model_file: best checkpoint first)."""
    layout = RunLayout(directory)
    path = layout.model_file()
    if path is None:
        raise ValueError(f"{layout.root} holds no model: expected {layout.best_model} or {layout.final_model}. "
                         "Give a run directory written by the trainer or a directory written by dfd.export")
    return path


def load(directory: str | Path) -> LoadedModel:
    """The model of a run or export directory (or .onnx file), its preprocessing and its decision threshold."""
    directory = Path(directory)
    if directory.suffix == ".onnx" and not directory.is_dir():
        from dfd.evaluation import onnx_model  # onnxruntime: the `onnx` extra

        return onnx_model.load(directory)
    if not directory.is_dir():
        raise ValueError(f"--model/--run_dir {directory} is not a directory")
    path = model_file(directory)
    spec_path = directory / PREPROCESSING_FILE
    if not spec_path.is_file():
        raise ValueError(f"{spec_path} is missing: without it dfd cannot preprocess files the way the model "
                         "was trained. Copy the run's preprocessing.json there")
    spec = PreprocessSpec.load(spec_path)
    temperature, calibration_source = calibration.read_calibration(directory)
    threshold, source = read_threshold(directory, temperature)
    return LoadedModel(load_keras_model(path), spec, threshold, source, path, temperature, calibration_source)
