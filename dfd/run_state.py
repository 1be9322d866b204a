"""What a run directory already holds, before the trainer writes into it: a fresh start, a resume, a
finished run, or another run (refused unless --overwrite).

"The same run" means the same data and the same flags except those that only change how long, how
visibly or on what hardware it trains (RESUMABLE_FLAGS): --epochs, --patience, --verbose,
--profile_batch, --cache, --strategy and --jit_compile. The data is the same when its metadata.json
is the same folder (resolved path) and its metadata.json lists the same shards (names, counts, bytes)
and preprocessing: a dataset converted again with other files is other data. --extra_train_data folders
count as data too (data_metadata.json lists them): other (or no) extra folders make another run. Everything
else (model, hparams, learning rate, batch size, seed, augmentation, precision...) must match: a resumed
run restores the backup's weights and optimizer state, and mixing two settings in one run would leave
files no single command produced.

`start_clean` (--overwrite) removes only what dfd writes there (RunLayout.written_by_dfd); a dfd.export
folder inside the run is removed only when it holds a saved_model.pb.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dfd import folders, train_flags
from dfd.run_layout import RunLayout

RESUMABLE_FLAGS = frozenset({"epochs", "patience", "verbose", "profile_batch", "cache", "strategy", "jit_compile"})
_OVERWRITE_HINT = ("choose another --run_dir, or add --overwrite to delete that run's results "
                   "(only the files dfd wrote there) and start again")


def check_run_dir_path(run_dir) -> None:
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--run_dir={run_dir} is a file, not a folder; give a new or existing run folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--run_dir={run_dir}: {parent} is a file, not a folder")
            break
    folders.check_writable(path, "--run_dir")   # before the data is opened and the model built


def flag_lines(text: str) -> dict[str, str]:
    """flagfile text -> {flag name: line}; `--noX` is the line of flag X."""
    known = {*train_flags.flag_names(), *train_flags.hparam_names()}
    lines = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            continue
        name = line[2:].split("=", 1)[0]
        if "=" not in line and name.startswith("no") and name[2:] in known:
            name = name[2:]
        lines[name] = line
    return lines


def _data_identity(metadata: dict) -> dict:
    # The folder as well as its listing: raw-encoded datasets of equal counts have shards of equal size.
    return {"directory": metadata.get("directory"), "splits": metadata.get("splits"),
            "preprocessing": metadata.get("preprocessing"), "extra_train_data": metadata.get("extra_train_data")}


def differences(layout: RunLayout, config: train_flags.TrainConfig, data_metadata: dict) -> list[str]:
    """How the run in `layout` differs from `config` on `data_metadata`; [] for the same run (or none).

    data_metadata: the data's metadata.json with "directory" (its absolute path) added, as the trainer
    copies it into the run.
    """
    if not layout.flags.is_file():
        return []
    before = flag_lines(layout.flags.read_text())
    now = flag_lines(train_flags.flagfile_text(config))
    # A flag added to dfd after the run was trained (absent from its flags.txt) at its default is the same run.
    for name, default in train_flags.flag_defaults().items():
        if name not in before and now.get(name) == train_flags.flag_line(name, default):
            before[name] = now[name]
    changed = [f"{before.get(name, f'no --{name}')} there, {now.get(name, f'no --{name}')} now"
               for name in sorted(set(before) | set(now))
               # The data folders are compared below, by resolved path and contents, not as typed.
               if name not in RESUMABLE_FLAGS and name not in ("data", "extra_train_data")
               and before.get(name) != now.get(name)]
    if layout.data_metadata.is_file():
        recorded = json.loads(layout.data_metadata.read_text())
        if _data_identity(recorded) != _data_identity(data_metadata):
            changed.append(_other_data(recorded, data_metadata))
    return changed


def _data_names(metadata: dict) -> str:
    extra = [str(entry.get("directory")) for entry in metadata.get("extra_train_data") or []]
    return str(metadata.get("directory", "?")) + (f" with --extra_train_data {', '.join(extra)}" if extra else "")


def _other_data(recorded: dict, now: dict) -> str:
    """Which data the run was trained on and which it is given now: both, or why one folder is not the same data."""
    there, given = _data_names(recorded), _data_names(now)
    if there != given:
        return f"it was trained on other data ({there} there, {given} now)"
    # The same folders, converted again since (other files, counts or preprocessing).
    return (f"it was trained on other data ({there} as it was then: converted again since, its shards or "
            "preprocessing differ)")


def check_same_run(layout: RunLayout, config: train_flags.TrainConfig, data_metadata: dict) -> None:
    changed = differences(layout, config, data_metadata)
    if changed:
        raise ValueError(f"{layout.root} holds another training run ({'; '.join(changed)}): {_OVERWRITE_HINT}")


def finished_summary(layout: RunLayout) -> dict | None:
    """The summary of a finished run (its final files are written), else None."""
    if layout.summary.is_file() and layout.final_model.is_file():
        return json.loads(layout.summary.read_text())
    return None


def completed_epochs(layout: RunLayout) -> int:
    """Epochs held by the BackupAndRestore state (0 without one): where a resumed fit starts."""
    # A --warmup_epochs run keeps one backup per phase (backup/warmup, backup/fine_tune); epochs
    # count across both, so the furthest one is where the run stands.
    epochs = [0]
    for folder in (layout.backup, layout.backup / "warmup", layout.backup / "fine_tune"):
        try:
            epochs.append(int(json.loads((folder / "training_metadata.json").read_text())["epoch"]))
        except (OSError, ValueError, KeyError):
            pass
    return max(epochs)


def start_clean(layout: RunLayout) -> list[Path]:
    """Removes what dfd wrote in the run directory (--overwrite); returns what it removed."""
    removed = []
    candidates = list(layout.written_by_dfd())
    if (layout.export / "saved_model.pb").is_file():
        candidates.append(layout.export)
    for path in candidates:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    checkpoints = layout.best_model.parent
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    return removed
