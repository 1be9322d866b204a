"""What dfd.evaluate, dfd.predict, dfd.export and dfd.serve hold of a model: LoadedModel.

dfd.evaluation.loading.load builds one from a run or export directory (a Keras model) and
dfd.evaluation.onnx_model from an .onnx file (an onnxruntime session behind the same interface). Its own
module so that both builders import it without importing each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np

from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import calibration
from dfd.models import fake_probability


@dataclasses.dataclass
class LoadedModel:
    model: keras.Model
    spec: PreprocessSpec          # the preprocessing the model was trained with
    threshold: float              # P(fake) >= threshold is called fake
    threshold_source: str         # where the threshold came from, for the report
    model_path: Path
    temperature: float = 1.0      # calibration.json (dfd.evaluate --calibrate); 1.0: raw model outputs
    calibration_source: str | None = None

    def set_temperature(self, temperature: float) -> None:
        """Scores from now on divided on the logit by `temperature`; the threshold follows (same decisions)."""
        self.threshold = calibration.to_calibrated_threshold(self.threshold, temperature / self.temperature)
        self.temperature = temperature

    @property
    def input_shape(self) -> tuple:
        """The model's input shape without the batch dimension: (H, W, 3) or (T, H, W, 3)."""
        return tuple(self.model.inputs[0].shape[1:])

    @property
    def scores_frames(self) -> bool:
        """True for an image model: it scores single frames, and a clip by aggregating its frames."""
        return len(self.input_shape) == 3

    def check_record_shape(self, num_frames: int, height: int, width: int) -> None:
        """Refuses records the model cannot take, saying what would fit."""
        expected = self.input_shape
        frame = expected[-3:-1]
        if tuple(frame) != (height, width):
            raise ValueError(f"the model takes {frame[0]}x{frame[1]} frames but the records are {height}x{width}; "
                             "convert the data with the model's preprocessing (its preprocessing.json)")
        if not self.scores_frames and expected[0] != num_frames:
            raise ValueError(f"the model is a video model taking {expected[0]} frames per clip, "
                             f"the records have {num_frames}; convert with num_frames={expected[0]}")

    def score(self, frames: np.ndarray) -> np.ndarray:
        """P(fake) per example of a uint8 batch in the model's input shape, float64 (B,)."""
        # predict_on_batch runs a traced function: far faster than an eager call per batch.
        raw = np.asarray(fake_probability(np.asarray(self.model.predict_on_batch(frames))), dtype=np.float64)
        return calibration.apply_temperature(raw, self.temperature)

    def score_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 (B, T, H, W, 3) clips: (B,) scores for a video model, (B, T) frame scores for an image model."""
        if self.scores_frames:
            batch, num_frames = clips.shape[:2]
            return self.score(clips.reshape((batch * num_frames,) + clips.shape[2:])).reshape(batch, num_frames)
        return self.score(clips)
