"""A run's best model as a SavedModel for TensorFlow Serving (or one ONNX file), verified by reloading it.

`export_format="onnx"` writes a single .onnx file instead (dfd.evaluation.onnx_export); the rest of
this doc is the SavedModel format, the default.

The export directory holds:
  saved_model.pb, variables/   serving signature `serve` (also `serving_default`):
                               uint8 (B, <training shape>) -> P(fake), float32 (B,)
  model.keras                  the same model for Keras (and for dfd.predict --model=DIR)
  preprocessing.json           how files must be preprocessed to feed it
  threshold.json               the decision threshold (copied from the run; 0.5 if evaluate never ran)
  calibration.json             only when the run has one (dfd.evaluate --calibrate): the temperature. It is
                               baked into the SavedModel's output (TF Serving clients get calibrated P(fake));
                               model.keras stays the raw model and dfd.predict applies the file to it
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dfd import folders
from dfd.atomic_files import write_text
from dfd.evaluation import calibration, loading
from dfd.evaluation.serving import sample_batch, serving_model
from dfd.run_layout import RunLayout

# Float32 outputs of the same graph: anything above this is a broken export, not rounding.
MAX_ABS_DIFFERENCE = 1e-5


def _clear_output(output: Path, overwrite: bool) -> None:
    if not output.exists() or not any(output.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"{output} exists and is not empty; choose a new --output directory or pass --overwrite")
    # Only ever delete what looks like an earlier export, never an arbitrary folder given by mistake.
    if not (output / "saved_model.pb").is_file():
        raise ValueError(f"--overwrite replaces an earlier export only, and {output} holds no saved_model.pb; "
                         "choose a new --output directory")
    shutil.rmtree(output)


FORMATS = ("saved_model", "onnx")


def export(run_dir: str | Path, output: str | Path, verbose: bool = True, overwrite: bool = False,
           export_format: str = "saved_model") -> float:
    """Writes the export directory and returns the max abs difference between reloaded and source outputs."""
    if export_format not in FORMATS:
        raise ValueError(f"the export format must be one of {FORMATS}, got {export_format!r}")
    folders.check_writable(output, "--output")   # before the model is loaded and converted
    if export_format == "onnx":
        from dfd.evaluation import onnx_export  # onnx, onnxruntime, tf2onnx: the `onnx` extra

        return onnx_export.export_onnx(run_dir, output, verbose=verbose, overwrite=overwrite)
    if keras.backend.backend() != "tensorflow":
        # A SavedModel is a TensorFlow graph; the .keras file holds weights only and loads on TensorFlow.
        raise ValueError(f"--format=saved_model needs the TensorFlow backend (this process runs Keras on "
                         f"{keras.backend.backend()}): run dfd.export with --backend=tensorflow (the run's .keras "
                         "file loads on either backend), or use --format=onnx")
    layout = RunLayout(run_dir)
    loaded = loading.load(layout.root)
    output = Path(output)
    _clear_output(output, overwrite)
    output.mkdir(parents=True, exist_ok=True)

    serving = serving_model(loaded.model, loaded.temperature)
    serving.export(str(output), format="tf_saved_model", verbose=False,
                   input_signature=[tf.TensorSpec((None,) + loaded.input_shape, tf.uint8, name="pixels")])
    shutil.copyfile(loaded.model_path, output / loading.EXPORT_MODEL_FILE)
    loaded.spec.save(output / loading.PREPROCESSING_FILE)
    threshold, source = loaded.threshold, loaded.threshold_source
    # The run's threshold as the export's model applies it (at its temperature), with how it was chosen.
    recorded = loading.read_threshold_file(layout.root) or {"method": "default", "chosen_on": ""}
    loading.write_threshold(output, threshold, recorded["method"], f"copied from {source}", loaded.temperature)
    if loaded.temperature != 1.0:
        write_text(output / calibration.CALIBRATION_FILE, (layout.root / calibration.CALIBRATION_FILE).read_text())

    batch = sample_batch(loaded, layout)
    expected = loaded.score(batch)
    reloaded = tf.saved_model.load(str(output))
    served = reloaded.signatures["serving_default"](pixels=tf.constant(batch))
    actual = np.asarray(next(iter(served.values())), dtype=np.float64)
    difference = float(np.max(np.abs(actual - expected)))
    if verbose:
        print(f"Exported {loaded.model_path} to {output} (input uint8 {(None,) + loaded.input_shape}, "
              f"output P(fake)); threshold {threshold:.4f} from {source}")
        if loaded.temperature != 1.0:
            print(f"P(fake) is calibrated: {loaded.calibration_source}, baked into the SavedModel and copied "
                  f"beside model.keras for dfd.predict")
        print(f"Reloaded SavedModel vs source model on a batch of {len(batch)}: max abs difference {difference:.3g}")
    if difference > MAX_ABS_DIFFERENCE:
        raise ValueError(f"the reloaded export disagrees with the source model (max abs difference {difference:.3g}); "
                         "do not serve it")
    return difference
