"""Run directories for tests: a model saved where the trainer leaves it, with its preprocessing."""

from __future__ import annotations

from pathlib import Path

import keras

from dfd import models
from dfd.data.preprocessing import PreprocessSpec
from dfd.run_layout import RunLayout


def untrained_image_run(run_dir: str | Path, spec: PreprocessSpec) -> RunLayout:
    """A tiny untrained image_cnn for `spec`'s frames, saved as a run's best checkpoint (seeded: the same model
    every call)."""
    layout = RunLayout(run_dir)
    layout.best_model.parent.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    models.build_model("image_cnn", (spec.size, spec.size, 3), conv_filters=(4,), kernel_sizes=(3,),
                       dense_units=8).save(layout.best_model)
    spec.save(layout.preprocessing)
    return layout
