"""Evaluating a run on a split: scores, metrics at 0.5 and at the chosen threshold, plots, files.

    evaluate(run_dir, split="test", data=None, threshold_method="0.5", aggregate="mean") -> dict

Writes into the run directory (dfd.run_layout.RunLayout):
  eval/<split>/metrics.json       both metric sets, the threshold and where it came from; for an
                                  image model on video records also frame_level and video_level
  eval/<split>/*.png              confusion matrix, ROC, precision-recall, score histogram
  eval/<split>/predictions.csv    source, label, score, predicted: open the misclassified files
  tb/eval/<split>/                the same plots as TensorBoard images
  threshold.json                  the chosen threshold; dfd.predict applies it. A fixed-0.5 evaluation
                                  does not replace a threshold chosen on validation data earlier
  calibration.json                --calibrate: the temperature fitted on the val split; loading applies it
  eval/<split>/explain/           --explain=N: Grad-CAM pictures of confident mistakes and correct answers

metrics.json always holds the expected calibration error, Brier score and reliability table
("calibration"), and with --perturb the robustness table ("robustness").
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from dfd import folders
from dfd.atomic_files import write_json
from dfd.data import integrity, pipeline, schema
from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import calibration, loading, metrics, perturb, plots, report
from dfd.run_layout import RunLayout

# Flag names under which a run's flags.txt may record its training data folder.
_DATA_FLAG = re.compile(r"^--(?:data|data_dir|tfrecords)=(.+)$")


def training_data_dir(layout: RunLayout) -> Path:
    """The TFRecord folder a run was trained on, from its data_metadata.json or flags.txt."""
    if layout.data_metadata.is_file():
        recorded = json.loads(layout.data_metadata.read_text()).get("directory")
        if recorded:
            return Path(recorded)
    if layout.flags.is_file():
        for line in layout.flags.read_text().splitlines():
            match = _DATA_FLAG.match(line.strip())
            if match:
                return Path(match.group(1))
    raise ValueError(f"cannot tell which data {layout.root} was trained on; pass --data=DIR (a TFRecord folder)")


def open_data(loaded: loading.LoadedModel, data_dir: str | Path) -> DatasetMetadata:
    """The dataset's metadata, refused when its preprocessing is not the model's."""
    data = pipeline.open_dataset(data_dir)
    differences = loaded.spec.differences(data.preprocessing)
    if differences:
        raise ValueError(f"{data_dir} was converted with different preprocessing than the model was trained with "
                         f"(model != data): {'; '.join(differences)}. Convert the data again with the model's "
                         "preprocessing.json")
    shape = data.preprocessing.record_shape
    loaded.check_record_shape(shape.num_frames, shape.height, shape.width)
    return data


def score_split(loaded: loading.LoadedModel, data: DatasetMetadata, split: str, batch_size: int = 64,
                aggregate: str = "mean", transform=None) -> dict:
    """Scores every record of a split: {"sources", "labels", "scores"} (numpy arrays, one per example).

    An image model on video records scores every frame; a video's score is then the
    `aggregate` of its frame scores (all records of one source video together), and
    "frame_scores" maps each source to its frame scores. `transform(frames, batch_index)`, when
    given, changes each uint8 (B, T, H, W, 3) batch before scoring (dfd.evaluation.perturb).
    """
    shape = data.preprocessing.record_shape
    dataset, _ = pipeline.make_eval_dataset(data, split, batch_size=batch_size, details=True)
    sources, labels, scores, padded = [], [], [], []
    try:
        for batch_index, (frames, batch_labels, batch_sources, batch_padded) in enumerate(dataset.as_numpy_iterator()):
            if transform is not None:
                frames = transform(frames, batch_index)
            scores.append(loaded.score_clips(frames))
            labels.append(batch_labels)
            padded.append(batch_padded)
            sources += [schema.decode_text(source) for source in batch_sources]
    except tf.errors.DataLossError as error:   # a shard failed its CRC: name it, say how to repair
        raise integrity.corrupt_data_error(data, (split,), error) from None
    labels = np.concatenate(labels).astype(np.int64)
    scores = np.concatenate(scores)
    if scores.ndim == 1:
        return {"sources": np.array(sources), "labels": labels, "scores": scores}
    if shape.num_frames == 1:   # image model on image records: one frame each
        return {"sources": np.array(sources), "labels": labels, "scores": scores[:, 0]}
    # Padding repeats a short video's last frame: its copies are not scored twice (as in dfd.predict).
    frame_scores, label_of = {}, {}
    for source, label, row, num_padded in zip(sources, labels, scores, np.concatenate(padded), strict=True):
        frame_scores.setdefault(source, []).extend(row[:len(row) - int(num_padded)].tolist())
        label_of.setdefault(source, int(label))
    clip_ids, clip_scores = metrics.aggregate_scores(
        [score for scores_of in frame_scores.values() for score in scores_of],
        [source for source, scores_of in frame_scores.items() for _ in scores_of], aggregate)
    return {"sources": np.array(clip_ids), "labels": np.array([label_of[clip] for clip in clip_ids]),
            "scores": clip_scores, "frame_scores": frame_scores}


def frame_and_video_level(scored: dict, video_metrics: dict, aggregate: str) -> dict:
    """ROC AUC (and AP, accuracy at 0.5) of every frame score and of the video scores, with their counts.

    The field reports both (DeepfakeBench, SBI): frame-level scores each frame against its video's
    label; video-level scores the `aggregate` of each video's frames (the metrics of this evaluation).
    """
    label_of = dict(zip(scored["sources"], scored["labels"], strict=True))
    frame_labels = [label_of[source] for source, scores in scored["frame_scores"].items() for _ in scores]
    frame_scores = [score for scores in scored["frame_scores"].values() for score in scores]
    frames = metrics.compute_metrics(frame_labels, frame_scores, 0.5)
    return {
        "frame_level": {"roc_auc": frames["roc_auc"], "average_precision": frames["average_precision"],
                        "accuracy": frames["accuracy"], "num_frames": frames["count"],
                        "class_counts": frames["class_counts"], "num_videos": len(scored["sources"])},
        "video_level": {"roc_auc": video_metrics["roc_auc"], "average_precision": video_metrics["average_precision"],
                        "accuracy": video_metrics["accuracy"], "num_videos": video_metrics["count"],
                        "class_counts": video_metrics["class_counts"], "aggregate": aggregate},
    }


def format_levels(result: dict) -> str:
    frame, video = result["frame_level"], result["video_level"]

    def auc(value):
        return "undefined" if value is None else f"{value:.4f}"

    return (f"Frame-level ROC AUC: {auc(frame['roc_auc'])} on {frame['num_frames']} frames of {frame['num_videos']} "
            f"videos\nVideo-level ROC AUC: {auc(video['roc_auc'])} on {video['num_videos']} videos "
            f"({video['aggregate']} of frame scores)")


def write_predictions(path: Path, scored: dict, threshold: float) -> None:
    # surrogateescape: a source name that is not UTF-8 is written back as its own bytes.
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "label", "score", "predicted"])
        for source, label, score in zip(scored["sources"], scored["labels"], scored["scores"], strict=True):
            writer.writerow([source, int(label), f"{score:.6f}", int(score >= threshold)])


def evaluate(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
             threshold_method: str = "0.5", aggregate: str = "mean", batch_size: int = 64,
             print_report: bool = True, calibrate: bool = False, perturbations=(), perturb_seed: int = 0,
             explain: int = 0) -> dict:
    """Evaluates a run's best model on `split`; returns what metrics.json holds.

    calibrate: fit temperature scaling on the val split first (calibration.json), report before/after.
    perturbations: ("jpeg:90,70", ...) score the split again under each level (dfd.evaluation.perturb).
    explain: write Grad-CAM pictures of the N most confident mistakes and correct answers per class.
    """
    if threshold_method not in metrics.THRESHOLD_METHODS:
        raise ValueError(f"--threshold must be one of {metrics.THRESHOLD_METHODS}, got {threshold_method!r}")
    if aggregate not in metrics.AGGREGATE_METHODS:
        raise ValueError(f"--aggregate must be one of {metrics.AGGREGATE_METHODS}, got {aggregate!r}")
    if explain < 0:
        raise ValueError(f"--explain must be >= 0 examples per group, got {explain}")
    parsed_perturbations = perturb.parse(perturbations)   # bad flags fail before minutes of scoring
    layout = RunLayout(run_dir)
    loaded = loading.load(layout.root)
    folders.check_writable(layout.root, "--run_dir")   # eval/, threshold.json: refused before minutes of scoring
    data_dir = Path(data) if data is not None else training_data_dir(layout)
    dataset = open_data(loaded, data_dir)
    # Both uses of the val split are refused before minutes of scoring when it is missing.
    has_val = split == "val" or ("val" in dataset.splits and dataset.count("val") > 0)
    if calibrate and not has_val:
        raise ValueError(f"--calibrate fits on the val split, and {data_dir} has no val examples; "
                         "drop --calibrate or use data with a val split")
    if threshold_method != "0.5" and not has_val:
        raise ValueError(f"--threshold={threshold_method} is chosen on the val split, and {data_dir} has no "
                         "val examples; use --threshold=0.5 or data with a val split")

    calibration_fit = None
    if calibrate:
        loaded.set_temperature(1.0)   # fit on raw outputs, whatever an earlier calibration.json said
    scored = score_split(loaded, dataset, split, batch_size, aggregate)
    validation = None
    if calibrate or threshold_method != "0.5":   # scored once, for the temperature and the threshold
        validation = scored if split == "val" else score_split(loaded, dataset, "val", batch_size, aggregate)
    if calibrate:
        temperature = calibration.fit_temperature(validation["labels"], calibration.example_frame_scores(validation),
                                                  aggregate)
        raw_threshold = loaded.threshold
        raw, raw_validation = scored, validation
        scored = calibration.calibrated(scored, temperature, aggregate)
        validation = calibration.calibrated(validation, temperature, aggregate)
        loaded.set_temperature(temperature)
        calibration_fit = {
            "temperature": temperature, "fitted_on": f"val split of {data_dir}",
            "before": calibration.summary(raw["labels"], raw["scores"], raw_threshold),
            "after": calibration.summary(scored["labels"], scored["scores"], loaded.threshold),
        }
        calibration.write_calibration(
            layout.root, temperature, calibration_fit["fitted_on"], aggregate if "frame_scores" in scored else None,
            calibration.summary(raw_validation["labels"], raw_validation["scores"], raw_threshold),
            calibration.summary(validation["labels"], validation["scores"], loaded.threshold))

    if threshold_method == "0.5":
        threshold, chosen_on = 0.5, "fixed"
    else:
        threshold = metrics.choose_threshold(validation["labels"], validation["scores"], threshold_method)
        chosen_on = f"val split of {data_dir}"
    # A plain evaluation (fixed 0.5) never replaces a threshold chosen on validation data earlier:
    # predict would silently switch back. Delete threshold.json to return to 0.5.
    kept = threshold_method == "0.5" and layout.threshold.is_file()
    # Decisions below use the threshold predict will use: a kept one (mapped to this temperature) or the new one.
    decision_threshold = loaded.threshold if kept else threshold

    at_half = metrics.compute_metrics(scored["labels"], scored["scores"], 0.5)
    at_chosen = metrics.compute_metrics(scored["labels"], scored["scores"], threshold)
    result = {
        "split": split, "data": str(data_dir), "model": str(loaded.model_path),
        "aggregate": aggregate if "frame_scores" in scored else None,
        "threshold": {"method": threshold_method, "value": threshold, "chosen_on": chosen_on},
        "at_0.5": at_half, "at_threshold": at_chosen,
        "temperature": loaded.temperature,
        "calibration": calibration.calibration_metrics(scored["labels"], scored["scores"]),
    }
    if "frame_scores" in scored:
        result.update(frame_and_video_level(scored, at_half, aggregate))
    if calibration_fit is not None:
        result["calibration_fit"] = calibration_fit

    out = layout.eval_dir(split)
    out.mkdir(parents=True, exist_ok=True)
    tensorboard_dir = layout.tensorboard / "eval" / split
    figures = plots.evaluation_figures(scored["labels"], scored["scores"], at_chosen)
    extra_curves = {f"T={loaded.temperature:.3f}": scored["scores"]} if calibration_fit else {}
    figures["reliability"] = calibration.reliability_figure(
        scored["labels"], raw["scores"] if calibration_fit else scored["scores"],
        f"Reliability, {split} split", extra=extra_curves)
    if parsed_perturbations:
        result["robustness"] = perturb.robustness(
            lambda transform: score_split(loaded, dataset, split, batch_size, aggregate, transform),
            parsed_perturbations, decision_threshold, perturb_seed, baseline=scored)
        figures["robustness"] = perturb.robustness_figure(result["robustness"])
    write_json(out / "metrics.json", result)
    write_predictions(out / "predictions.csv", scored, threshold)
    if "frame_scores" in scored:
        write_json(out / "frame_scores.json", scored["frame_scores"], indent=None)
    plots.write_figures(figures, out, tensorboard_dir=tensorboard_dir)
    if explain:
        from dfd.evaluation import explain as explain_module  # imports Grad-CAM machinery only when asked

        explained = explain_module.explain_split(loaded, dataset, split, scored, decision_threshold, explain,
                                                 out / "explain", tensorboard_dir, batch_size)
        result["explained"] = [str(path.relative_to(out)) for path in explained]
        write_json(out / "metrics.json", result)
    if not kept:
        loading.write_threshold(layout.root, threshold, threshold_method, chosen_on, loaded.temperature)

    if print_report:
        results = {"threshold 0.5": at_half}
        if threshold_method != "0.5":
            results[f"threshold {threshold_method}"] = at_chosen
        extra = [f"Model: {loaded.model_path}", f"Data: {data_dir}"]
        if "frame_scores" in scored:
            extra.append(f"Image model on video records: clip score = {aggregate} of frame scores")
            extra.append(format_levels(result))
        if loaded.temperature != 1.0 and calibration_fit is None:
            extra.append(f"Calibrated probabilities: {loaded.calibration_source}")
        print(report.format_report(results, split, scored["sources"], scored["labels"], scored["scores"], extra))
        print(report.format_trust(result))
        print(f"Wrote {out}/metrics.json, predictions.csv, plots; TensorBoard images in {tensorboard_dir}")
        if calibration_fit is not None:
            print(f"Temperature {loaded.temperature:.4f} written to {layout.root / calibration.CALIBRATION_FILE}; "
                  "dfd.predict, dfd.export and dfd.serve use calibrated probabilities (delete the file to stop)")
        if kept:
            print(f"Kept the threshold in {layout.threshold} (dfd.predict uses it); delete the file to use 0.5")
        else:
            print(f"Threshold {threshold:.4f} ({threshold_method}) written to {layout.threshold}; dfd.predict uses it")
    return result
