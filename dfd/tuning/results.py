"""The end of a search: ranked rows, the printed table, <run_dir>/tuner/trials.csv and best.flags.

Order: accepted trials by the objective, ties to the fewer parameters (rank 1 is best.flags), then
rejected ones (train-validation AUC gap above --max_gap) by their measured objective, then failed and
unfinished ones; only accepted trials get a rank.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from dfd import atomic_files, train_flags
from dfd.tuning.board import searched_values
from dfd.tuning.objectives import DIRECTIONS, measured, trial_metrics

COLUMNS = ("rank", "trial_id", "status", "objective", "val_auc", "val_loss", "auc_gap", "loss_gap",
           "params", "trainable_params", "best_epoch", "epochs")


def _status(trial, metrics: dict) -> str:
    if trial.status == "COMPLETED":
        return "rejected" if metrics.get("rejected") else "ok"
    if trial.status in ("FAILED", "INVALID"):
        return "failed"
    return "unfinished"   # interrupted: a re-run of the same command runs it again


def ranked_rows(trials, objective: str) -> list[dict]:
    """One dict per trial (COLUMNS plus hp_<name> per searched hparam), best first."""
    rows = []
    for trial in trials:
        metrics = trial_metrics(trial)
        row = {"trial_id": trial.trial_id, "status": _status(trial, metrics),
               "objective": measured(metrics, objective),
               **{name: measured(metrics, name) for name in COLUMNS[4:]}}
        # Rounded: the dropout grid's 0.15000000000000002 is 0.15.
        row.update({f"hp_{name}": round(value, 10) if isinstance(value, float) else value
                    for name, value in searched_values(trial.hyperparameters).items()})
        rows.append(row)
    sign = -1 if DIRECTIONS[objective] == "max" else 1
    order = {"ok": 0, "rejected": 1, "failed": 2, "unfinished": 3}

    def key(row):
        value = row["objective"]
        # Ties (val AUC 1.0 is common on easy data) go to the smaller model.
        return (order[row["status"]], sign * value if value is not None and math.isfinite(value) else math.inf,
                row["params"] if row["params"] is not None else math.inf, row["trial_id"])

    rows.sort(key=key)
    rank = 0
    for row in rows:
        if row["status"] == "ok":
            rank += 1
            row["rank"] = rank
        else:
            row["rank"] = None
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def format_table(rows: list[dict]) -> str:
    headers = ["rank", "trial", "status", "val_auc", "val_loss", "auc_gap", "loss_gap", "params",
               "epochs", "hparams"]
    lines = []
    for row in rows:
        hparams = " ".join(f"{name[3:]}={_cell(value)}" for name, value in row.items() if name.startswith("hp_"))
        epochs = row["epochs"]
        lines.append([_cell(row["rank"]), row["trial_id"], row["status"], _cell(row["val_auc"]), _cell(row["val_loss"]),
                      "-" if row["auc_gap"] is None else f"{row['auc_gap']:+.3f}",
                      "-" if row["loss_gap"] is None else f"{row['loss_gap']:+.3f}",
                      "-" if row["params"] is None else f"{int(row['params']):,}",
                      "-" if epochs is None else f"{int(row['best_epoch'])}/{int(epochs)}", hparams])
    widths = [max(len(str(cells[i])) for cells in [headers, *lines]) for i in range(len(headers) - 1)]
    formatted = []
    for cells in [headers, *lines]:
        formatted.append("  ".join(str(cell).ljust(width) for cell, width in zip(cells[:-1], widths, strict=True))
                         + "  " + cells[-1])
    return "\n".join(formatted)


def write_csv(rows: list[dict], path: str | Path) -> None:
    hparam_columns = sorted({name for row in rows for name in row if name.startswith("hp_")})
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[*COLUMNS, *hparam_columns])
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if row.get(name) is None else row[name] for name in writer.fieldnames})
    atomic_files.write_text(path, table.getvalue())


def best_flags_text(config, row: dict, objective: str, tune_run_dir: str, best_run_dir: str,
                    fields: tuple = ("model",)) -> str:
    """The winner as flags: --model, the other searched recipe `fields` of its TrainConfig (--input_size,
    the scaled --augment_*, --pseudo_fake_fraction: search_space.Recipe.fields), its hparams,
    --learning_rate and --run_dir=<tune run>/best.

    Given after the training flagfile (later flags win), it turns that training into the winner's:
        python -m dfd.train --flagfile=configs/video.flags --flagfile=<run_dir>/best.flags
    --run_dir points at <run_dir>/best, where --retrain_best trains too (so either resumes the other),
    and keeps the retraining from overwriting the training flagfile's own run.
    """
    lines = [
        f"# Best trial {row['trial_id']} of the dfd.tune search in {tune_run_dir}: {objective} "
        f"{row['objective']:.4f}, train-val AUC gap {row['auc_gap']:+.3f}, {int(row['params']):,} parameters.",
        "# Retrain it at full length: the training flagfile first, then this file (later flags win):",
        "#   python -m dfd.train --flagfile=TRAINING_FLAGFILE --flagfile=THIS_FILE",
        *(train_flags.flag_line(name, getattr(config, name)) for name in dict.fromkeys(("model", *fields))),
        *(train_flags.flag_line(name, config.hparams[name]) for name in sorted(config.hparams)),
        f"--learning_rate={config.learning_rate!r}",
        f"--run_dir={best_run_dir}",
    ]
    return "\n".join(lines) + "\n"
