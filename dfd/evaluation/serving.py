"""The model as every export serves it, and a batch to verify an export with (SavedModel and ONNX).

    serving_model(model, temperature)   uint8 pixels -> P(fake) (B,), the calibration temperature baked in
    sample_batch(loaded, layout)        real frames of the run's data (random pixels when unreachable)
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from dfd.data import pipeline
from dfd.evaluation import calibration
from dfd.evaluation.loaded_model import LoadedModel
from dfd.models import fake_probability
from dfd.run_layout import RunLayout


def serving_model(model: keras.Model, temperature: float = 1.0) -> keras.Model:
    """The model with its output reduced to P(fake) (B,), so serving clients need not know the head.

    A temperature other than 1 is applied on the logit, as dfd.evaluation.calibration does.
    """
    pixels = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype="uint8", name="pixels")
    probability = fake_probability(model(pixels))
    if temperature != 1.0:
        clipped = keras.ops.clip(keras.ops.cast(probability, "float32"), calibration.EPSILON, 1.0 - calibration.EPSILON)
        # log(1 - p), not log1p(-p): tf2onnx has no Log1p (the ONNX export failed on it), and 1 - p is exact
        # in float32 for p >= 0.5 (Sterbenz), where the logit needs the precision.
        probability = keras.ops.sigmoid((keras.ops.log(clipped) - keras.ops.log(1.0 - clipped)) / temperature)
    return keras.Model(pixels, probability, name=f"{model.name}_serving")


def sample_batch(loaded: LoadedModel, layout: RunLayout, size: int = 8) -> np.ndarray:
    """Real frames from the run's data when reachable (random pixels otherwise), in the model's input shape."""
    from dfd.evaluation.evaluate import open_data, training_data_dir

    try:
        data_dir = training_data_dir(layout)
        pipeline.open_dataset(data_dir)
    except (ValueError, OSError):
        return _random_batch(loaded, size)
    try:
        # dfd.evaluate's check: data converted again since (another size) failed deep inside Keras here.
        data = open_data(loaded, data_dir)
    except ValueError as error:
        print(f"note: {error}. The export is verified on random pixels instead", file=sys.stderr)
        return _random_batch(loaded, size)
    try:
        split = next(name for name in ("test", "val", "train") if name in data.splits and data.count(name))
        dataset, _ = pipeline.make_eval_dataset(data, split, batch_size=size, details=True)
        clips = next(iter(dataset))[0].numpy()
        return clips[:, 0] if loaded.scores_frames else clips
    except (ValueError, StopIteration, OSError):
        return _random_batch(loaded, size)


def _random_batch(loaded: LoadedModel, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size,) + loaded.input_shape, dtype=np.uint8)
