"""dfd.evaluate on other data: its own eval folder, the run's decisions untouched unless asked, and the
cross-dataset table of several --data folders (one command), on tiny synthetic shards."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dfd.evaluation import calibration, evaluate, table
from dfd.run_layout import RunLayout
from dfd.testing.fake_shards import write_fake_dataset

sys.path.insert(0, str(Path(__file__).parent))
# video_run: an image model trained on 4-frame video records; image_run: an overconfident image model on
# image records with 80 val images (module fixtures: this module gets its own).
from test_calibration_perturb import CALIBRATION_COUNTS, calibration_run  # noqa: E402,F401
from test_evaluate_predict_export import SIZE, video_run  # noqa: E402,F401

ROOT = Path(__file__).resolve().parent.parent


def other_video_data(path: Path, seed: int = 1) -> Path:
    """Video records like video_run's (same preprocessing), drawn with another seed."""
    return write_fake_dataset(path, kind="video", num_frames=4, size=SIZE, seed=seed,
                              counts={"val": (4, 4), "test": (3, 5)})


def copied_run(video_run, tmp_path) -> RunLayout:  # noqa: F811
    return RunLayout(shutil.copytree(video_run[0].root, tmp_path / "run"))   # the shared run stays as it is


def test_other_data_never_changes_the_runs_threshold_or_eval_folder_unless_asked(video_run, tmp_path, capsys):  # noqa: F811
    run = copied_run(video_run, tmp_path)
    own = evaluate.evaluate(run.root, threshold_method="val_eer", print_report=False)
    chosen, own_metrics = run.threshold.read_bytes(), (run.eval_dir("test") / "metrics.json").read_bytes()
    other = other_video_data(tmp_path / "other")
    result = evaluate.evaluate(run.root, data=other, threshold_method="val_youden")
    printed = capsys.readouterr().out
    assert run.threshold.read_bytes() == chosen and (run.eval_dir("test") / "metrics.json").read_bytes() == own_metrics
    saved = json.loads((run.eval_dir("test", "other") / "metrics.json").read_text())
    assert saved["data"] == str(other) and saved["training_data"] is False and saved["at_0.5"]["count"] == 8
    assert saved["threshold"]["method"] == "val_youden" and saved["threshold"]["chosen_on"] == f"val split of {other}"
    # What the run decides on this data: its own threshold, not the one chosen on the other data.
    assert result["at_run_threshold"]["threshold"] == pytest.approx(own["threshold"]["value"])
    assert "threshold.json not written" in printed and "--write_decisions" in printed
    assert list((run.tensorboard / "eval" / "other" / "test").glob("events.out.tfevents.*"))
    # Asked for, the threshold chosen on the other data becomes the run's.
    evaluate.evaluate(run.root, data=other, threshold_method="val_youden", write_decisions=True, print_report=False)
    written = json.loads(run.threshold.read_text())
    assert written["method"] == "val_youden" and written["chosen_on"] == f"val split of {other}"
    # The training data named by --data is the run's own: eval/test/, and its decisions are the run's.
    evaluate.evaluate(run.root, data=video_run[1], threshold_method="val_eer", print_report=False)
    assert json.loads(run.threshold.read_bytes())["threshold"] == pytest.approx(own["threshold"]["value"])
    assert not (run.root / "eval" / video_run[1].name).exists()


def test_a_temperature_fitted_on_other_data_is_reported_not_written(calibration_run, tmp_path, capsys):  # noqa: F811
    layout = RunLayout(shutil.copytree(calibration_run[0].root, tmp_path / "run"))
    other = write_fake_dataset(tmp_path / "faces", kind="image", size=SIZE, counts=CALIBRATION_COUNTS, seed=3)
    result = evaluate.evaluate(layout.root, data=other, calibrate=True)
    fit = result["calibration_fit"]
    assert fit["kept"] and not fit["written"] and fit["after"]["loss"] < fit["before"]["loss"]
    assert not layout.calibration.exists() and not layout.threshold.exists()
    assert result["temperature"] == 1.0   # the metrics are the run's: raw scores, as predict gives them
    assert "No calibration.json written" in capsys.readouterr().out
    evaluate.evaluate(layout.root, data=other, calibrate=True, write_decisions=True, print_report=False)
    assert json.loads(layout.calibration.read_text())["fitted_on"] == f"val split of {other}"


def test_the_table_of_several_datasets(video_run, tmp_path, capsys):  # noqa: F811
    run = copied_run(video_run, tmp_path)
    first, second = other_video_data(tmp_path / "a" / "faces", 1), other_video_data(tmp_path / "b" / "faces", 2)
    folders = table.split_data_flag(f"{video_run[1]},{first},{second}")   # dfd.evaluate --data=A,B,C
    table.evaluate_datasets(run.root, folders)
    printed = capsys.readouterr().out
    saved = json.loads((run.root / "eval" / "table.json").read_text())
    rows = saved["rows"]
    assert [row["dataset"] for row in rows] == [f"{video_run[1].name} (training data)", "a_faces", "b_faces"]
    assert [(row["real"], row["fake"], row["frames"]) for row in rows] == [(4, 4, 32), (3, 5, 32), (3, 5, 32)]
    assert [row["eval_dir"] for row in rows] == [str(run.eval_dir("test")), str(run.eval_dir("test", "a_faces")),
                                                 str(run.eval_dir("test", "b_faces"))]
    for row in rows:
        metrics = json.loads((Path(row["eval_dir"]) / "metrics.json").read_text())
        assert row["frame"]["roc_auc"] == metrics["frame_level"]["roc_auc"] > 0.8   # the model separates them
        assert row["video"] == {key: metrics["at_0.5"][key] for key in ("roc_auc", "average_precision", "eer")}
        assert row["log_loss"] == metrics["at_0.5"]["loss"] and row["threshold"] == 0.5
        assert row["accuracy"] == metrics["at_0.5"]["accuracy"]
    markdown = (run.root / "eval" / "table.md").read_text()
    assert markdown in printed and "Classification Report:" not in printed   # the table, not three reports
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0] == "| " + " | ".join(table.COLUMNS) + " |" and len(lines) == 4
    assert lines[2].startswith("| a_faces | 3 | 5 | ") and f"{rows[1]['frame']['roc_auc']:.4f}" in lines[2]


def test_the_command_refuses_decisions_with_several_folders(video_run, tmp_path):  # noqa: F811
    """dfd.evaluate --data=A,B reaches the table (refused before any model loads: one line, exit code 2)."""
    run = copied_run(video_run, tmp_path)
    other = other_video_data(tmp_path / "other")
    done = subprocess.run([sys.executable, "-m", "dfd.evaluate", f"--run_dir={run.root}",
                           f"--data={video_run[1]},{other}", "--threshold=val_eer"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("dfd.evaluate: --threshold set the run's decisions")
    assert not (run.root / "eval").exists()


def test_the_table_refuses_a_folder_and_decisions_before_scoring_any(video_run, tmp_path):  # noqa: F811
    run = copied_run(video_run, tmp_path)
    good = other_video_data(tmp_path / "good")
    # Frames of another size cannot feed the model (another encoding or face crop can: they are scored).
    larger = write_fake_dataset(tmp_path / "larger", kind="video", num_frames=4, size=SIZE * 2,
                                counts={"test": (1, 1)})
    with pytest.raises(ValueError, match=f"{larger} was converted with different preprocessing.*size: {SIZE} != "
                                         f"{SIZE * 2}"):
        table.evaluate_datasets(run.root, [str(good), str(larger)])
    no_test = write_fake_dataset(tmp_path / "no_test", kind="video", num_frames=4, size=SIZE, counts={"val": (1, 1)})
    with pytest.raises(ValueError, match=f"{no_test} has no 'test' split"):
        table.evaluate_datasets(run.root, [str(good), str(no_test)])
    with pytest.raises(ValueError, match="--threshold, --calibrate set the run's decisions from one dataset"):
        table.evaluate_datasets(run.root, [str(good), str(good)], threshold_method="val_eer", calibrate=True)
    with pytest.raises(ValueError, match="names a folder twice"):
        table.evaluate_datasets(run.root, [str(good), str(tmp_path / "x" / ".." / "good")])
    assert not (run.root / "eval").exists()   # nothing scored
    assert table.split_data_flag(f"{good},{larger}") == [str(good), str(larger)]
    comma = write_fake_dataset(tmp_path / "a,b", kind="video", num_frames=4, size=SIZE, counts={"test": (1, 1)})
    assert table.split_data_flag(str(comma)) == [str(comma)] and table.split_data_flag(None) == [None]


def test_image_data_has_no_video_columns_and_one_dataset_keeps_its_report(calibration_run, capsys):  # noqa: F811
    layout, _ = calibration_run
    [row] = table.evaluate_datasets(layout.root, [None])
    printed = capsys.readouterr().out
    assert "Classification Report:" in printed and "Table written to" in printed   # the one-dataset report
    assert row["unit"] == "image" and row["video"] is None and (row["real"], row["fake"]) == (40, 40)
    assert 0.5 < row["frame"]["roc_auc"] < 1.0 and row["frames"] is None   # overlapping classes
    markdown = (layout.root / "eval" / "table.md").read_text()
    [line] = [line for line in markdown.splitlines() if line.startswith("| data (training data) |")]
    assert line.count(f" {table.DASH} ") == 3   # video AUC, AP, EER
    assert calibration.CALIBRATION_FILE not in os.listdir(layout.root)


def test_folders_of_one_name_get_their_parents_name_then_a_number(tmp_path):
    run = RunLayout(tmp_path / "run")   # no recorded training data: every folder is other data
    folders = ["/x/a/faces", "/x/b/faces", "/y/a/faces", "/z/other"]
    assert table.dataset_names(run, folders) == ["a_faces", "b_faces", "a_faces-2", "other"]
