"""Where everything of a training run lives; trainer, evaluate, predict, export and tune share it.

`written_by_dfd()` lists every path dfd may create in a run directory: `dfd.train --overwrite` removes
those and nothing else, so a user's own notes or data kept beside a run are never touched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dfd.atomic_files import TMP_SUFFIX


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

    def model_file(self) -> Path | None:
        """The run's Keras model, the one every reader uses (evaluate, predict, export, serve, cnn_lstm's
        frame_cnn): checkpoints/best.keras, the best epoch by validation AUC, which a run killed before its
        end has too; else model.keras (the last epoch; all an export directory holds). None without either."""
        for candidate in (self.best_model, self.final_model):
            if candidate.is_file():
                return candidate
        return None

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def summary(self) -> Path:          # end-of-run summary (best epoch, metrics, timing)
        return self.root / "summary.json"

    @property
    def threshold(self) -> Path:        # decision threshold chosen by evaluate
        return self.root / "threshold.json"

    def eval_dir(self, split: str, dataset: str | None = None) -> Path:
        """eval/<split>/ for the run's training data; eval/<dataset>/<split>/ for other data (dfd.evaluate)."""
        return self.root / "eval" / split if dataset is None else self.root / "eval" / dataset / split

    @property
    def eval_table(self) -> Path:       # dfd.evaluate's table of every --data folder (also table.json)
        return self.root / "eval" / "table.md"

    @property
    def tuner(self) -> Path:
        return self.root / "tuner"

    @property
    def export(self) -> Path:           # the usual dfd.export --output inside a run (`make demo`)
        return self.root / "export"

    @staticmethod
    def partial(path: Path) -> Path:    # a file being written; renamed to `path` when complete
        return path.with_name(f".{path.stem}.partial{path.suffix}")

    @property
    def calibration(self) -> Path:     # temperature fitted by evaluate --calibrate (dfd.evaluation.calibration)
        return self.root / "calibration.json"

    def written_by_dfd(self) -> list[Path]:
        """Every file and folder dfd writes into a run directory (trainer, evaluate, tune), except the lock."""
        files = [self.flags, self.data_metadata, self.preprocessing, self.best_model, self.final_model,
                 self.history, self.summary, self.threshold, self.calibration]
        partials = [self.partial(path) for path in (self.best_model, self.final_model)]
        # dfd.atomic_files writes every JSON file beside itself first: a kill can leave those behind.
        partials += [path.with_name(path.name + TMP_SUFFIX) for path in files if path.suffix == ".json"]
        tune = [self.tuner, self.root / "best.flags", self.root / "best"]
        return files + partials + [self.tensorboard, self.backup, self.root / "eval"] + tune
