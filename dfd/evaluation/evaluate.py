"""Evaluating a run on a split: scores, metrics at 0.5 and at the chosen threshold, plots, files.

    evaluate(run_dir, split="test", data=None, threshold_method="0.5", aggregate="mean") -> dict

One evaluation runs score -> calibrate -> choose threshold -> write -> report. It writes into the run
directory (dfd.run_layout.RunLayout), under eval/<split>/ for the run's training data and under
eval/<name>/<split>/ for any other --data folder (name: the folder's name):
  metrics.json                    both metric sets, the threshold and where it came from, the run's own
                                  decisions on this data ("at_run_threshold"); for an image model on video
                                  records also frame_level and video_level
  *.png                           confusion matrix, ROC, precision-recall, score histogram, reliability
  predictions.csv                 source, label, score, predicted: open the misclassified files
  explain/                        --explain=N: Grad-CAM pictures of confident mistakes and correct answers
  tb/eval/[<name>/]<split>/       the same plots as TensorBoard images
  threshold.json                  the chosen threshold; dfd.predict applies it. A fixed-0.5 evaluation
                                  does not replace a threshold chosen on validation data earlier
  calibration.json                --calibrate: the temperature fitted on the val split, written only when
                                  calibration.decide_temperature keeps it; loading applies it
threshold.json and calibration.json are the run's decisions (what predict, export and serve do): only an
evaluation of the run's own training data writes them, or one of other data with write_decisions.

metrics.json always holds the expected calibration error, Brier score and reliability table
("calibration"), and with --perturb the robustness table ("robustness").
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from dfd import folders
from dfd.atomic_files import write_json
from dfd.data import integrity, pipeline, schema
from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import calibration, loading, metrics, perturb, plots, report
from dfd.evaluation.loaded_model import LoadedModel
from dfd.run_layout import RunLayout

# Flag names under which a run's flags.txt may record its training data folder.
_DATA_FLAG = re.compile(r"^--(?:data|data_dir|tfrecords)=(.+)$")


@dataclasses.dataclass
class Scored:
    """score_split's result: one entry per example (a video or an image), in the order read."""
    sources: np.ndarray
    labels: np.ndarray              # int64: 0 real, 1 fake
    scores: np.ndarray              # P(fake); an image model's video: the aggregate of its frame scores
    frame_scores: dict[str, list[float]] | None = None   # image model on video records: each source's frames


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


def is_training_data(layout: RunLayout, data_dir: str | Path) -> bool:
    """Whether `data_dir` is the folder the run was trained on (the data whose val split may set its decisions)."""
    try:
        trained_on = training_data_dir(layout)
    except ValueError:
        return False   # unknown: treated as other data, so it never changes the run's decisions unasked
    try:
        return os.path.samefile(trained_on, data_dir)
    except OSError:    # one of them is missing (a relative --data recorded by flags.txt from elsewhere)
        return Path(trained_on).resolve() == Path(data_dir).resolve()


def open_data(loaded: LoadedModel, data_dir: str | Path) -> DatasetMetadata:
    """The dataset's metadata, refused when its records cannot feed the model (frame size; a video model's
    clip length). Other differences of preprocessing (another dataset's face crops) are open_target's to say."""
    data = pipeline.open_dataset(data_dir)
    differences = loaded.spec.input_differences(data.preprocessing, loaded.scores_frames)
    if differences:
        raise ValueError(f"{data_dir} was converted with different preprocessing than the model was trained with "
                         f"(model != data): {'; '.join(differences)}. Convert the data again with the model's "
                         "preprocessing.json")
    shape = data.preprocessing.record_shape
    loaded.check_record_shape(shape.num_frames, shape.height, shape.width)
    return data


def score_split(loaded: LoadedModel, data: DatasetMetadata, split: str, batch_size: int = 64,
                aggregate: str = "mean", transform=None) -> Scored:
    """Scores every record of a split: a Scored (numpy arrays, one entry per example).

    An image model on video records scores every frame; a video's score is then the
    `aggregate` of its frame scores (all records of one source video together), and
    `frame_scores` maps each source to its frame scores. `transform(frames, batch_index)`, when
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
        return Scored(np.array(sources), labels, scores)
    if shape.num_frames == 1:   # image model on image records: one frame each
        return Scored(np.array(sources), labels, scores[:, 0])
    # Padding repeats a short video's last frame: its copies are not scored twice (as in dfd.predict).
    frame_scores, label_of = {}, {}
    for source, label, row, num_padded in zip(sources, labels, scores, np.concatenate(padded), strict=True):
        frame_scores.setdefault(source, []).extend(row[:len(row) - int(num_padded)].tolist())
        label_of.setdefault(source, int(label))
    clip_ids, clip_scores = metrics.aggregate_scores(
        [score for scores_of in frame_scores.values() for score in scores_of],
        [source for source, scores_of in frame_scores.items() for _ in scores_of], aggregate)
    return Scored(np.array(clip_ids), np.array([label_of[clip] for clip in clip_ids]), clip_scores, frame_scores)


def frame_and_video_level(scored: Scored, video_metrics: dict, aggregate: str) -> dict:
    """ROC AUC (and AP, EER, accuracy at 0.5) of every frame score and of the video scores, with their counts.

    The field reports both (DeepfakeBench, SBI): frame-level scores each frame against its video's
    label; video-level scores the `aggregate` of each video's frames (the metrics of this evaluation).
    """
    label_of = dict(zip(scored.sources, scored.labels, strict=True))
    frame_labels = [label_of[source] for source, scores in scored.frame_scores.items() for _ in scores]
    frame_scores = [score for scores in scored.frame_scores.values() for score in scores]
    frames = metrics.compute_metrics(frame_labels, frame_scores, 0.5)
    return {
        "frame_level": {"roc_auc": frames["roc_auc"], "average_precision": frames["average_precision"],
                        "eer": frames["eer"], "accuracy": frames["accuracy"], "num_frames": frames["count"],
                        "class_counts": frames["class_counts"], "num_videos": len(scored.sources)},
        "video_level": {"roc_auc": video_metrics["roc_auc"], "average_precision": video_metrics["average_precision"],
                        "eer": video_metrics["eer"], "accuracy": video_metrics["accuracy"],
                        "num_videos": video_metrics["count"], "class_counts": video_metrics["class_counts"],
                        "aggregate": aggregate},
    }


def format_levels(result: dict) -> str:
    frame, video = result["frame_level"], result["video_level"]

    def auc(value):
        return "undefined" if value is None else f"{value:.4f}"

    return (f"Frame-level ROC AUC: {auc(frame['roc_auc'])} on {frame['num_frames']} frames of {frame['num_videos']} "
            f"videos\nVideo-level ROC AUC: {auc(video['roc_auc'])} on {video['num_videos']} videos "
            f"({video['aggregate']} of frame scores)")


def write_predictions(path: Path, scored: Scored, threshold: float) -> None:
    # surrogateescape: a source name that is not UTF-8 is written back as its own bytes.
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "label", "score", "predicted"])
        for source, label, score in zip(scored.sources, scored.labels, scored.scores, strict=True):
            writer.writerow([source, int(label), f"{score:.6f}", int(score >= threshold)])


@dataclasses.dataclass(frozen=True)
class Options:
    """How one evaluation runs (dfd.evaluate's flags)."""
    split: str = "test"
    threshold_method: str = "0.5"
    aggregate: str = "mean"
    batch_size: int = 64
    calibrate: bool = False
    perturbations: tuple = ()       # perturb.parse's result
    perturb_seed: int = 0
    explain: int = 0
    write_decisions: bool = False   # other data may set the run's threshold.json / calibration.json

    @property
    def uses_val(self) -> bool:
        return self.calibrate or self.threshold_method != "0.5"


@dataclasses.dataclass
class Target:
    """One evaluation's run, model, data and output folders."""
    layout: RunLayout
    loaded: LoadedModel
    data_dir: Path
    dataset: DatasetMetadata
    own_data: bool          # the run's training data
    sets_decisions: bool    # this evaluation may write threshold.json and calibration.json
    out: Path               # eval/<split>/, or eval/<name>/<split>/ for other data
    tensorboard_dir: Path


@dataclasses.dataclass
class Scores:
    """What an evaluation scored: the split, the val split when a temperature or threshold is chosen on it,
    and with --calibrate the split's raw scores (T = 1) and the record of the fit (metrics.json's
    "calibration_fit"). `split` and `validation` are at the temperature the evaluation reports."""
    split: Scored
    validation: Scored | None = None
    raw: Scored | None = None
    fit: dict | None = None


@dataclasses.dataclass(frozen=True)
class Decisions:
    """The threshold of this evaluation's "at_threshold" metrics, and the one dfd.predict uses after it."""
    method: str
    value: float
    chosen_on: str
    run_threshold: float    # what the run decides with after this evaluation, on these scores' scale
    written: bool           # threshold.json is (re)written
    note: str               # the report's line about threshold.json


def check_options(threshold_method: str, aggregate: str, explain: int, perturbations) -> list:
    """Bad flags fail before minutes of scoring; returns the parsed perturbations."""
    if threshold_method not in metrics.THRESHOLD_METHODS:
        raise ValueError(f"--threshold must be one of {metrics.THRESHOLD_METHODS}, got {threshold_method!r}")
    if aggregate not in metrics.AGGREGATE_METHODS:
        raise ValueError(f"--aggregate must be one of {metrics.AGGREGATE_METHODS}, got {aggregate!r}")
    if explain < 0:
        raise ValueError(f"--explain must be >= 0 examples per group, got {explain}")
    return perturb.parse(perturbations)


def dataset_name(data_dir: str | Path) -> str:
    """The name other data's results go under (eval/<name>/<split>/): the folder's own name."""
    return Path(data_dir).resolve().name or "data"


def open_target(run_dir: str | Path, data: str | Path | None, options: Options, name: str | None = None) -> Target:
    """The run's model and the data, checked against each other, and where this evaluation writes."""
    layout = RunLayout(run_dir)
    loaded = loading.load(layout.root)
    folders.check_writable(layout.root, "--run_dir")   # eval/, threshold.json: refused before minutes of scoring
    data_dir = Path(data) if data is not None else training_data_dir(layout)
    own_data = data is None or is_training_data(layout, data_dir)
    dataset = open_data(loaded, data_dir)
    others = loaded.spec.differences(dataset.preprocessing)
    if others:   # said once, where it is scored (the table checks every folder first, through open_data)
        print(f"dfd.evaluate: {data_dir} was converted otherwise than the model's data (model != data: "
              f"{'; '.join(others)}); its frames fit the model, so it is scored as it is")
    name = None if own_data else (name or dataset_name(data_dir))
    tensorboard_dir = layout.tensorboard / "eval" / (options.split if name is None else Path(name, options.split))
    return Target(layout, loaded, data_dir, dataset, own_data, own_data or options.write_decisions,
                  layout.eval_dir(options.split, name), tensorboard_dir)


def check_val_split(target: Target, options: Options) -> None:
    """Both uses of the val split are refused before minutes of scoring when it is missing."""
    dataset = target.dataset
    if options.split == "val" or ("val" in dataset.splits and dataset.count("val") > 0):
        return
    if options.calibrate:
        raise ValueError(f"--calibrate fits on the val split, and {target.data_dir} has no val examples; "
                         "drop --calibrate or use data with a val split")
    if options.threshold_method != "0.5":
        raise ValueError(f"--threshold={options.threshold_method} is chosen on the val split, and {target.data_dir} "
                         "has no val examples; use --threshold=0.5 or data with a val split")


def score(target: Target, options: Options) -> Scores:
    """The split (and the val split when needed), at the run's temperature, or raw (T = 1) to calibrate."""
    loaded = target.loaded
    if options.calibrate:
        loaded.set_temperature(1.0)   # fit on raw outputs, whatever an earlier calibration.json said
    split = score_split(loaded, target.dataset, options.split, options.batch_size, options.aggregate)
    validation = None
    if options.uses_val:   # scored once, for the temperature and the threshold
        validation = split if options.split == "val" else score_split(loaded, target.dataset, "val",
                                                                     options.batch_size, options.aggregate)
    return Scores(split, validation)


def calibrate_scores(target: Target, options: Options, raw: Scores, run_temperature: float) -> Scores:
    """Temperature scaling where calibration.decide_temperature trusts it; the scores at the temperature the
    run uses afterwards. A fit that is not kept, or not this evaluation's to write, changes nothing: an
    earlier calibration.json stays and the scores are reported at its temperature."""
    loaded, aggregate = target.loaded, options.aggregate
    validation = raw.validation
    decision = calibration.decide_temperature(validation.labels, calibration.example_frame_scores(validation),
                                              aggregate)
    fitted_on = f"val split of {target.data_dir}"
    fit = {"kept": decision.kept, "written": False, "reason": decision.reason, "fitted_on": fitted_on,
           "decision": decision.as_json(), "run_temperature": run_temperature}
    if decision.kept:
        raw_threshold, temperature = loaded.threshold, decision.temperature
        split = calibration.calibrated(raw.split, temperature, aggregate)
        calibrated_val = calibration.calibrated(validation, temperature, aggregate)
        loaded.set_temperature(temperature)
        fit.update(temperature=temperature,
                   before=calibration.summary(raw.split.labels, raw.split.scores, raw_threshold),
                   after=calibration.summary(split.labels, split.scores, loaded.threshold))
        if target.sets_decisions:
            calibration.write_calibration(
                target.layout.root, temperature, fitted_on, aggregate if split.frame_scores is not None else None,
                calibration.summary(validation.labels, validation.scores, raw_threshold),
                calibration.summary(calibrated_val.labels, calibrated_val.scores, loaded.threshold),
                cross_validation={key: fit["decision"][key]
                                  for key in ("folds", "held_out_loss_raw", "held_out_loss_fitted")})
            fit["written"] = True
            return Scores(split, calibrated_val, raw.split, fit)
    loaded.set_temperature(run_temperature)
    return Scores(calibration.calibrated(raw.split, run_temperature, aggregate),
                  calibration.calibrated(validation, run_temperature, aggregate), raw.split, fit)


def choose_threshold(target: Target, options: Options, scores: Scores) -> Decisions:
    """The threshold by --threshold, and whether it becomes the run's (threshold.json)."""
    method, layout, loaded = options.threshold_method, target.layout, target.loaded
    if method == "0.5":
        value, chosen_on = 0.5, "fixed"
    else:
        value = metrics.choose_threshold(scores.validation.labels, scores.validation.scores, method)
        chosen_on = f"val split of {target.data_dir}"
    if method == "0.5" and layout.threshold.is_file():
        # A plain evaluation (fixed 0.5) never replaces a threshold chosen on validation data earlier:
        # predict would silently switch back. Delete threshold.json to return to 0.5.
        note = f"Kept the threshold in {layout.threshold} (dfd.predict uses it); delete the file to use 0.5"
        return Decisions(method, value, chosen_on, loaded.threshold, False, note)
    if not target.sets_decisions:
        note = (f"{layout.threshold} not written: {target.data_dir} is not the run's training data, and evaluating "
                "other data leaves the run's decisions alone (--write_decisions makes them the run's); the run "
                f"decides at {loaded.threshold:.4f} ({loaded.threshold_source})")
        return Decisions(method, value, chosen_on, loaded.threshold, False, note)
    note = f"Threshold {value:.4f} ({method}) written to {layout.threshold}; dfd.predict uses it"
    return Decisions(method, value, chosen_on, value, True, note)


def collect_metrics(target: Target, options: Options, scores: Scores, decisions: Decisions) -> dict:
    """What metrics.json holds (before robustness and explanations)."""
    scored, loaded = scores.split, target.loaded
    at_half = metrics.compute_metrics(scored.labels, scored.scores, 0.5)
    at_chosen = metrics.compute_metrics(scored.labels, scored.scores, decisions.value)
    at_run = metrics.compute_metrics(scored.labels, scored.scores, decisions.run_threshold)
    result = {
        "split": options.split, "data": str(target.data_dir), "model": str(loaded.model_path),
        "record_kind": target.dataset.preprocessing.kind, "training_data": target.own_data,
        "aggregate": options.aggregate if scored.frame_scores is not None else None,
        "threshold": {"method": decisions.method, "value": decisions.value, "chosen_on": decisions.chosen_on},
        "at_0.5": at_half, "at_threshold": at_chosen,
        # What the run decides on this data after this evaluation (threshold.json, calibration.json).
        "at_run_threshold": {"threshold": decisions.run_threshold, "temperature": loaded.temperature,
                             "accuracy": at_run["accuracy"], "loss": at_run["loss"],
                             "confusion_matrix": at_run["confusion_matrix"]},
        "temperature": loaded.temperature,
        "calibration": calibration.calibration_metrics(scored.labels, scored.scores),
    }
    if scored.frame_scores is not None:
        result.update(frame_and_video_level(scored, at_half, options.aggregate))
    if scores.fit is not None:
        result["calibration_fit"] = scores.fit
    return result


def write_outputs(target: Target, options: Options, scores: Scores, decisions: Decisions, result: dict) -> None:
    """metrics.json, predictions, plots (TensorBoard too), robustness, explanations and threshold.json."""
    scored, loaded, out = scores.split, target.loaded, target.out
    out.mkdir(parents=True, exist_ok=True)
    figures = plots.evaluation_figures(scored.labels, scored.scores, result["at_threshold"])
    # With --calibrate the raw scores are the model's curve and the temperature's scores a second one.
    shows_raw = scores.raw is not None and loaded.temperature != 1.0
    figures["reliability"] = calibration.reliability_figure(
        scored.labels, scores.raw.scores if shows_raw else scored.scores, f"Reliability, {options.split} split",
        extra={f"T={loaded.temperature:.3f}": scored.scores} if shows_raw else {})
    if options.perturbations:
        result["robustness"] = perturb.robustness(
            lambda transform: score_split(loaded, target.dataset, options.split, options.batch_size,
                                          options.aggregate, transform),
            options.perturbations, decisions.run_threshold, options.perturb_seed, baseline=scored)
        figures["robustness"] = perturb.robustness_figure(result["robustness"])
    write_json(out / "metrics.json", result)
    write_predictions(out / "predictions.csv", scored, decisions.value)
    if scored.frame_scores is not None:
        write_json(out / "frame_scores.json", scored.frame_scores, indent=None)
    plots.write_figures(figures, out, tensorboard_dir=target.tensorboard_dir)
    if options.explain:
        from dfd.evaluation import explain as explain_module  # imports Grad-CAM machinery only when asked

        explained = explain_module.explain_split(loaded, target.dataset, options.split, scored,
                                                 decisions.run_threshold, options.explain, out / "explain",
                                                 target.tensorboard_dir, options.batch_size)
        result["explained"] = [str(path.relative_to(out)) for path in explained]
        write_json(out / "metrics.json", result)
    if decisions.written:
        loading.write_threshold(target.layout.root, decisions.value, decisions.method, decisions.chosen_on,
                                loaded.temperature)


def calibration_note(target: Target, fit: dict | None) -> str | None:
    """The report's line about calibration.json after --calibrate."""
    if fit is None:
        return None
    path = target.layout.calibration
    if fit["written"]:
        return (f"Temperature {fit['temperature']:.4f} written to {path} ({fit['reason']}); dfd.predict, "
                "dfd.export and dfd.serve use calibrated probabilities (delete the file to stop)")
    if fit["kept"]:
        why = (f"{target.data_dir} is not the run's training data, and evaluating other data leaves the run's "
               "decisions alone (--write_decisions makes them the run's)")
    else:
        why = f"temperature scaling not kept: {fit['reason']}"
    if fit["run_temperature"] != 1.0:
        return (f"No calibration.json written ({why}); the earlier {path} (temperature "
                f"{fit['run_temperature']:.4f}) stays and dfd.predict, dfd.export and dfd.serve keep using it "
                "(delete it to use raw probabilities)")
    return f"No calibration.json written ({why}); dfd.predict, dfd.export and dfd.serve use raw probabilities"


def print_evaluation(target: Target, options: Options, scores: Scores, decisions: Decisions, result: dict) -> None:
    scored, loaded = scores.split, target.loaded
    results = {"threshold 0.5": result["at_0.5"]}
    if options.threshold_method != "0.5":
        results[f"threshold {options.threshold_method}"] = result["at_threshold"]
    extra = [f"Model: {loaded.model_path}", f"Data: {target.data_dir}"]
    if scored.frame_scores is not None:
        extra.append(f"Image model on video records: clip score = {options.aggregate} of frame scores")
        extra.append(format_levels(result))
    if loaded.temperature != 1.0 and not (scores.fit or {}).get("written"):
        extra.append(f"Calibrated probabilities: {loaded.calibration_source}")
    print(report.format_report(results, options.split, scored.sources, scored.labels, scored.scores, extra))
    print(report.format_trust(result))
    print(f"Wrote {target.out}/metrics.json, predictions.csv, plots; TensorBoard images in {target.tensorboard_dir}")
    note = calibration_note(target, scores.fit)
    if note is not None:
        print(note)
    print(decisions.note)


def evaluate(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
             threshold_method: str = "0.5", aggregate: str = "mean", batch_size: int = 64,
             print_report: bool = True, calibrate: bool = False, perturbations=(), perturb_seed: int = 0,
             explain: int = 0, write_decisions: bool = False, name: str | None = None) -> dict:
    """Evaluates a run's best model on `split`; returns what metrics.json holds.

    calibrate: temperature scaling fitted on the val split where it can be trusted and helps
        (calibration.decide_temperature: calibration.json), the split's metrics before and after.
    perturbations: ("jpeg:90,70", ...) score the split again under each level (dfd.evaluation.perturb).
    explain: write Grad-CAM pictures of the N most confident mistakes and correct answers per class.
    write_decisions: let data other than the run's training data set threshold.json and calibration.json;
        without it, evaluating other data never changes what predict, export and serve decide.
    name: other data's results go to eval/<name>/<split>/ (default: the data folder's name).
    """
    options = Options(split, threshold_method, aggregate, batch_size, calibrate,
                      tuple(check_options(threshold_method, aggregate, explain, perturbations)), perturb_seed,
                      explain, write_decisions)
    target = open_target(run_dir, data, options, name)
    check_val_split(target, options)
    run_temperature = target.loaded.temperature
    scores = score(target, options)
    if options.calibrate:
        scores = calibrate_scores(target, options, scores, run_temperature)
    decisions = choose_threshold(target, options, scores)
    result = collect_metrics(target, options, scores, decisions)
    write_outputs(target, options, scores, decisions, result)
    if print_report:
        print_evaluation(target, options, scores, decisions, result)
    return result
