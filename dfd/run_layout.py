"""Where everything of a training run lives; trainer, evaluate, predict, export and tune share it."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def flags(self) -> Path:            # resolved flags, re-usable as --flagfile
        return self.root / "flags.txt"

    @property
    def data_metadata(self) -> Path:    # copy of the training data's metadata.json + "directory" (absolute)
        return self.root / "data_metadata.json"

    @property
    def preprocessing(self) -> Path:    # PreprocessSpec used for training
        return self.root / "preprocessing.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def best_model(self) -> Path:       # best epoch by validation AUC
        return self.root / "checkpoints" / "best.keras"

    @property
    def backup(self) -> Path:           # BackupAndRestore state
        return self.root / "backup"

    @property
    def final_model(self) -> Path:
        return self.root / "model.keras"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def summary(self) -> Path:          # end-of-run summary (best epoch, metrics, timing)
        return self.root / "summary.json"

    @property
    def threshold(self) -> Path:        # decision threshold chosen by evaluate
        return self.root / "threshold.json"

    def eval_dir(self, split: str) -> Path:
        return self.root / "eval" / split

    @property
    def tuner(self) -> Path:
        return self.root / "tuner"
