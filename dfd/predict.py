"""`python -m dfd.predict --model=RUN_OR_EXPORT_DIR|FILE.onnx PATH [PATH ...]`: P(fake) for image and video files.

PATHs are files or folders (searched recursively for images and videos). Output is
a JSON array (or CSV) with, per file: path, kind, fake_probability, label at the
model's threshold (threshold.json, written by dfd.evaluate; 0.5 without one),
frames_used, and for a video scored by an image model its frame_scores. When the run has a
calibration.json (dfd.evaluate --calibrate), P(fake) is the calibrated probability and each entry
carries the temperature. --explain=DIR writes a Grad-CAM picture per scored file. A file
that cannot be used gets an "error" entry; the exit code is 1 only when no file
could be scored. Folders are walked as a conversion walks its source (dfd.evaluation.predict.find_files);
what is left out (hidden folders, link loops) is said on stderr. A CSV cell that a spreadsheet would run as
a formula (starting with = + - @, a tab or CR) gets a leading single quote.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from absl import flags

from dfd import atomic_files, backend, cli, folders
from dfd.preprocess.video_reader import MAX_FRAME_PIXELS

FORMATS = ("json", "csv")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("path", "kind", "fake_probability", "label", "threshold", "frames_used", "frame_scores", "temperature",
               "explanation", "error")


def define_flags() -> None:
    from dfd.evaluation.metrics import AGGREGATE_METHODS  # imports TensorFlow: quiet it first (__main__)

    flags.DEFINE_string("model", None, "Run directory (trainer), export directory (dfd.export) or .onnx file "
                        "(dfd.export --format=onnx, scored with onnxruntime).", required=True)
    flags.DEFINE_enum("format", "json", list(FORMATS), "Output format.")
    flags.DEFINE_string("output", None, "Write to this file instead of stdout.")
    flags.DEFINE_integer("batch_size", 32, "Files per inference batch.")
    flags.DEFINE_integer("video_frames", 16, "Image model trained on images, given a video: frames sampled from it "
                         "and scored. Models trained on video records use their training num_frames.")
    flags.DEFINE_enum("aggregate", "mean", list(AGGREGATE_METHODS),
                      "Image model given a video: how its frame scores become the video's score.")
    flags.DEFINE_integer("max_frame_pixels", MAX_FRAME_PIXELS, "A video whose frames have more pixels "
                         "(width x height, from the stream's header) gets an error entry, before decoding; the "
                         "default, 4096x2304, holds 4K upright or portrait.")
    flags.DEFINE_string("explain", None, "Write a Grad-CAM picture per scored file into this folder (face crops "
                        "with heatmaps, per-frame scores, verdict). From an export directory it uses the model.keras "
                        "beside the SavedModel (a SavedModel has no layers to explain).")


def format_results(results: list, output_format: str) -> str:
    entries = [result.to_dict() for result in results]
    if output_format == "json":
        # One JSON array, one file per line: readable, greppable, and still valid JSON.
        return "[\n" + ",\n".join("  " + json.dumps(entry) for entry in entries) + "\n]\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for entry in entries:
        if "frame_scores" in entry:
            entry["frame_scores"] = ";".join(str(score) for score in entry["frame_scores"])
        writer.writerow({key: spreadsheet_safe(value) for key, value in entry.items()})
    return buffer.getvalue()


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text: a string starting with = + - @ (a formula, e.g. a file named
    `=HYPERLINK(...)`) or a tab or carriage return gets a leading single quote, as OWASP advises against
    CSV injection. Numbers are left as they are."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value


def check_output(output: str, paths: list[str], files: list[str]) -> None:
    """Refuses an --output that would lose the results or damage an input, before anything is scored."""
    target = Path(output)
    if target.is_dir():
        raise ValueError(f"--output={output} is a folder; give a file name, e.g. {target / 'predictions.json'}")
    parent = target.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"--output={output}: the folder {parent} does not exist; create it first")
    folders.check_writable(output, "--output")
    resolved = target.resolve()
    for path in {*paths, *files}:
        if os.path.isfile(path) and Path(path).resolve() == resolved:
            raise ValueError(f"--output={output} is one of the input files; it would be overwritten. "
                             "Write the results elsewhere")
    for path in paths:
        if os.path.isdir(path) and resolved.is_relative_to(Path(path).resolve()):
            raise ValueError(f"--output={output} is inside {path}, a folder being scanned; write the "
                             "results outside the input folders")


def predict_command(model: str, paths: list[str], output_format: str = "json", output: str | None = None,
                    batch_size: int = 32, video_frames: int = 16, aggregate: str = "mean", stdout=None,
                    explain: str | None = None, max_frame_pixels: int = MAX_FRAME_PIXELS) -> int:
    """The whole command behind main(); returns the exit code (1 when no file could be scored)."""
    from dfd.evaluation import loading, predict  # TensorFlow import is slow: only once there is work

    stdout = stdout or sys.stdout
    if output_format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {output_format!r}")
    notes = []
    files = predict.find_files(paths, notes)
    for note in notes:
        print(f"dfd.predict: {note}", file=sys.stderr)
    if not files:
        raise ValueError(f"no image or video files in {' '.join(paths)}")
    if output:
        check_output(output, paths, files)
    if explain and Path(model).suffix == ".onnx":
        raise ValueError(f"--explain needs the Keras model: {model} is an ONNX graph with no layers to explain; "
                         "give --model the run directory (or a SavedModel export directory) instead")
    loaded = loading.load(model)
    if loaded.temperature != 1.0:
        print(f"dfd.predict: calibrated P(fake): {loaded.calibration_source}", file=sys.stderr)
    crops = []
    on_frames = (lambda result, frames: crops.append((result, frames))) if explain else None
    if explain:
        from dfd.evaluation import explain as explain_module

        explain_module.feature_map_path(loaded.model)   # refuse a model without a feature map before scoring
        if (Path(model) / "saved_model.pb").is_file():
            print(f"dfd.predict: explaining with {loaded.model_path} (the SavedModel beside it has no layers "
                  "to explain)", file=sys.stderr)
    results = predict.predict_files(loaded, files, batch_size, video_frames, aggregate, on_frames=on_frames,
                                    max_frame_pixels=max_frame_pixels)
    if explain:
        order = {id(result): index for index, result in enumerate(results)}
        written = explain_module.explain_results(
            loaded, [(order[id(result)], result, frames) for result, frames in crops], explain)
        print(f"dfd.predict: {len(written)} explanation pictures in {explain}", file=sys.stderr)
    text = format_results(results, output_format)
    if output:
        # Beside the target, then renamed: an interrupted run never leaves half a file under its name.
        atomic_files.write_text(output, text, errors="surrogateescape")
    elif stdout is sys.stdout and hasattr(stdout, "buffer"):
        stdout.flush()
        stdout.buffer.write(text.encode(stdout.encoding or "utf-8", errors="surrogateescape"))
        stdout.buffer.flush()
    else:
        stdout.write(text)
    return 0 if any(result.error is None for result in results) else 1


def main(argv) -> int:
    paths = argv[1:]
    if not paths:
        raise ValueError("give one or more image/video files or folders after the flags")
    values = flags.FLAGS
    backend.check_supported(values)   # --explain is TensorFlow's
    return predict_command(values.model, paths, values.format, values.output, values.batch_size,
                           values.video_frames, values.aggregate, explain=values.explain,
                           max_frame_pixels=values.max_frame_pixels)


if __name__ == "__main__":
    cli.quiet_tensorflow()   # before define_flags, which imports TensorFlow (cli.run does it again: idempotent)
    define_flags()
    cli.run(main, "dfd.predict")
