"""The trainer's own Keras callbacks: stop loudly on NaN, history.json per epoch, a best.keras that survives a kill.

Order matters at epoch end (dfd.training.run): BackupAndRestore, then EpochLog (history.json), then
BestCheckpoint (best.keras), so that a kill between any two leaves files a resume can reconcile.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras

from dfd import atomic_files
from dfd.atomic_files import write_json
from dfd.run_layout import RunLayout


class NaNLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its backup/ was kept for inspection."""


class RaiseOnNaN(keras.callbacks.Callback):
    """Like keras.callbacks.TerminateOnNaN, but raises: a NaN run must not look like a finished one.

    Raising inside fit skips on_train_end, so BackupAndRestore keeps the last good epoch's state.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NaNLossError(
                f"loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}. The backup of "
                "the last completed epoch is kept; lower --learning_rate or try --precision=float32, "
                "then re-run the same command to resume.")


class EpochLog(keras.callbacks.Callback):
    """Writes history.json after every epoch, keeping earlier epochs of a resumed run.

    Keras's History only knows the epochs of the current fit call; after a resume the file still
    holds the full run. Also measures training clips/s (validation time excluded).
    """

    def __init__(self, path: Path | None, clips_per_epoch: int, completed: int = 0):
        super().__init__()
        self.path = path
        self.clips_per_epoch = clips_per_epoch
        # Only the epochs the backup holds: later ones (none, in the trainer's callback order) are re-run.
        self.epochs = [e for e in read_history(path) if e["epoch"] <= completed] if path else []
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = self._train_seconds or (time.perf_counter() - self._start)
        entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                 "train_seconds": train_seconds,
                 "train_clips_per_second": self.clips_per_epoch / train_seconds}
        self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [entry]
        if self.path:
            write_json(self.path, {"epochs": self.epochs})


class BestCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint(save_best_only) on val_auc that survives a kill and a resume.

    Keras's ModelCheckpoint starts every fit at best = -inf, so the first epoch after a resume
    overwrote best.keras even when an earlier epoch was better. This one starts from the best
    val_auc in history.json and writes under a temporary name, then renames. Placed after the
    backup and EpochLog: a kill after history.json records epoch e but before best.keras is
    written leaves the backup at epoch e, so on resume it writes the restored (epoch e) weights
    when e is the best in history. best.keras then always holds summary.json's best epoch.
    """

    def __init__(self, path: Path, history: list[dict], completed: int):
        super().__init__()
        self.path = path
        scored = [e for e in history if math.isfinite(e.get("val_auc", float("nan")))]
        best = max(scored, key=lambda e: e["val_auc"]) if scored else None
        self.best = best["val_auc"] if best else float("-inf")
        self._repair = bool(best) and best["epoch"] == completed

    def on_train_begin(self, logs=None):
        if self._repair:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("val_auc", float("nan")))
        if math.isfinite(value) and value > self.best:
            self.best = value
            self._save()

    def _save(self):
        save_model_atomically(self.model, self.path)


def save_model_atomically(model, path: Path) -> None:
    # A kill mid-save must not leave a truncated .keras file where a complete one was.
    partial = RunLayout.partial(path)
    atomic_files.refuse_link(path)
    partial.unlink(missing_ok=True)   # a killed save's, or a planted link: model.save would write through it
    model.save(partial)
    os.replace(partial, path)


def read_history(path: Path) -> list[dict]:
    if path and path.is_file():
        return json.loads(path.read_text()).get("epochs", [])
    return []


def profile_batch(value: str):
    """--profile_batch as keras.callbacks.TensorBoard takes it: 0 (off), a batch, or a (start, stop) range."""
    value = str(value).strip()
    if value in ("", "0"):
        return 0
    parts = [int(part) for part in value.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)
