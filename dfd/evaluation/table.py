"""The cross-dataset table: one run's model scored on the test split of several TFRecord folders.

    evaluate_datasets(run_dir, [DIR1, DIR2, ...]) -> rows    # dfd.evaluate --data=DIR1,DIR2,...

The field judges a detector by such a table (trained on one dataset, tested on several). Every folder is
checked against the run's preprocessing before any is scored; each is then evaluated by
dfd.evaluation.evaluate (its files under eval/<name>/<split>/, the run's own data under eval/<split>/)
at the run's own decisions (threshold.json, calibration.json), which other data never changes. The table
goes to eval/table.md and eval/table.json.
"""

from __future__ import annotations

from pathlib import Path

from dfd.atomic_files import write_json, write_text
from dfd.evaluation import evaluate as evaluation
from dfd.evaluation import loading
from dfd.run_layout import RunLayout

DASH = "–"   # a column that does not apply: video columns of image data, frame columns of a video model
COLUMNS = ("dataset", "real", "fake", "frame AUC", "frame AP", "frame EER", "video AUC", "video AP", "video EER",
           "log-loss", "accuracy")


def split_data_flag(value: str | None) -> list[str | None]:
    """--data as folders: comma-separated, unless the whole value is one folder (a name with a comma)."""
    if value is None:
        return [None]
    if "," not in value or Path(value).is_dir():
        return [value]
    folders = [part for part in value.split(",") if part]
    if not folders:
        raise ValueError(f"--data={value!r} names no folder; give DIR or DIR1,DIR2,...")
    return folders


def dataset_names(layout: RunLayout, folders: list[str | None]) -> list[str | None]:
    """eval/<name>/ of each folder: None for the run's training data, else the folder's name; two folders of
    one name get their parent's name in front (then a number)."""
    names = [None if folder is None or evaluation.is_training_data(layout, folder) else evaluation.dataset_name(folder)
             for folder in folders]
    given = list(names)   # collisions are counted among the folders' own names, before any is renamed
    for index, name in enumerate(given):
        if name is not None and given.count(name) > 1:
            parent = Path(folders[index]).resolve().parent.name
            names[index] = f"{parent}_{name}" if parent else name
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name is not None:
            seen[name] = seen.get(name, 0) + 1
            names[index] = name if seen[name] == 1 else f"{name}-{seen[name]}"
    return names


def check_datasets(run_dir: str | Path, folders: list[str], split: str) -> None:
    """Every folder converted with the run's preprocessing and holding `split` examples, before minutes of
    scoring; the error names the folder."""
    if len(set(Path(folder).resolve() for folder in folders)) != len(folders):
        raise ValueError(f"--data names a folder twice ({','.join(folders)}); give each folder once")
    loaded = loading.load(run_dir)
    for folder in folders:
        dataset = evaluation.open_data(loaded, folder)
        if dataset.count(split) == 0:
            raise ValueError(f"{folder} has no {split} examples; convert it with a {split} split or leave it out")


def _level(values: dict | None) -> dict | None:
    if values is None:
        return None
    return {"roc_auc": values["roc_auc"], "average_precision": values["average_precision"], "eer": values["eer"]}


def row(result: dict, name: str | None, eval_dir: Path) -> dict:
    """One dataset's line of the table from dfd.evaluation.evaluate's result.

    real / fake count the evaluated examples: videos of video records, images of image records. Frame-level
    is every frame of an image model (an image is one frame); video-level the aggregate of an image model's
    frames, or a video model's score.
    """
    main = result["at_0.5"]
    videos = result["record_kind"] == "video"
    if "frame_level" in result:
        frame, video = result["frame_level"], result["video_level"]
    else:
        frame, video = (None, main) if videos else (main, None)
    decided = result["at_run_threshold"]
    return {
        "dataset": name or f"{Path(result['data']).name} (training data)", "data": result["data"],
        "training_data": result["training_data"], "eval_dir": str(eval_dir), "split": result["split"],
        "unit": "video" if videos else "image", "real": main["class_counts"]["real"],
        "fake": main["class_counts"]["fake"],
        "frames": frame["num_frames"] if frame is not None and "num_frames" in frame else None,
        "frame": _level(frame), "video": _level(video), "log_loss": decided["loss"],
        "accuracy": decided["accuracy"], "threshold": decided["threshold"], "temperature": decided["temperature"],
    }


def _cell(level: dict | None, key: str) -> str:
    if level is None:
        return DASH
    return "undefined" if level[key] is None else f"{level[key]:.4f}"


def format_markdown(rows: list[dict], run_dir: str | Path) -> str:
    """The table as Markdown (printed as is), with what its numbers are."""
    thresholds = sorted({(entry["threshold"], entry["temperature"]) for entry in rows})
    decided = "; ".join(f"threshold {threshold:.4f}" + (f", temperature {temperature:.4f}" if temperature != 1.0
                                                         else "") for threshold, temperature in thresholds)
    lines = [f"Run {run_dir}, {rows[0]['split']} split of each dataset, at the run's decisions ({decided}).", "",
             "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for entry in rows:
        cells = [entry["dataset"], str(entry["real"]), str(entry["fake"])]
        cells += [_cell(entry[level], key) for level in ("frame", "video")
                  for key in ("roc_auc", "average_precision", "eer")]
        cells += [f"{entry['log_loss']:.4f}", f"{entry['accuracy']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "real / fake: videos of video records, images of image records. Frame: every frame scored "
              "(an image is one frame); video: a video model's score or the aggregate of an image model's frames. "
              f"{DASH}: does not apply. Log-loss of P(fake) and accuracy at the run's threshold."]
    return "\n".join(lines) + "\n"


def write_table(layout: RunLayout, rows: list[dict]) -> tuple[Path, Path]:
    markdown, json_path = layout.eval_table, layout.eval_table.with_suffix(".json")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    write_text(markdown, format_markdown(rows, layout.root), errors="surrogateescape")
    write_json(json_path, {"run": str(layout.root), "split": rows[0]["split"], "columns": list(COLUMNS),
                           "rows": rows})
    return markdown, json_path


def evaluate_datasets(run_dir: str | Path, folders: list[str | None], split: str = "test", **options) -> list[dict]:
    """dfd.evaluate: one folder (or None, the run's training data) is evaluated as ever, report printed;
    several make the table, printed, each at the run's own decisions. Both write eval/table.md and .json.

    options: dfd.evaluation.evaluate.evaluate's keyword arguments.
    """
    layout = RunLayout(run_dir)
    several = len(folders) > 1
    printing = options.pop("print_report", True)
    if several:
        asked = [flag for flag, value in (("--threshold", options.get("threshold_method", "0.5") != "0.5"),
                                          ("--calibrate", options.get("calibrate", False)),
                                          ("--write_decisions", options.get("write_decisions", False))) if value]
        if asked:
            raise ValueError(f"{', '.join(asked)} set the run's decisions from one dataset, and the table scores "
                             "several at the run's own: run dfd.evaluate with one --data (or none) for that "
                             "first, then the table")
        check_datasets(run_dir, folders, split)
    rows = []
    for folder, name in zip(folders, dataset_names(layout, folders), strict=True):
        result = evaluation.evaluate(run_dir, split, folder, name=name, print_report=printing and not several,
                                     **options)
        rows.append(row(result, name, layout.eval_dir(split, name)))
        if printing and several:
            print(f"Evaluated {result['data']}: {rows[-1]['eval_dir']}")
    markdown, json_path = write_table(layout, rows)
    if printing:
        if several:
            print(format_markdown(rows, layout.root))
        print(f"Table written to {markdown} and {json_path}")
    return rows
