"""dfd.evaluate, dfd.predict and dfd.export end to end on tiny synthetic data and real media files."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from dfd import models
from dfd.convert import convert
from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import evaluate, export, loading, plots, predict
from dfd.models import augmentation
from dfd.preprocess import records
from dfd.run_layout import RunLayout
from dfd.testing import synthetic
from dfd.testing.fake_shards import write_fake_dataset

SIZE = 16
SMALL_CNN = dict(conv_filters=(4,), kernel_sizes=(3,), dense_units=8)


def make_run(run_dir: Path, spec: PreprocessSpec, model: keras.Model, data_dir: Path | None = None) -> RunLayout:
    """A run directory as the trainer leaves it: best checkpoint, preprocessing, flags."""
    layout = RunLayout(run_dir)
    layout.best_model.parent.mkdir(parents=True, exist_ok=True)
    model.save(layout.best_model)
    spec.save(layout.preprocessing)
    if data_dir is not None:
        layout.flags.write_text(f"--model=image_cnn\n--data={data_dir}\n")
    return layout


def fitted_image_model(data_dir: Path) -> keras.Model:
    """image_cnn trained briefly on the frames of the fake dataset, so scores separate the classes."""
    meta = DatasetMetadata.load(data_dir)
    shape = meta.preprocessing.record_shape
    serialized = tf.data.TFRecordDataset([str(p) for p in meta.shard_paths("train")]).batch(64)
    frames, labels = [], []
    for batch in serialized:
        parsed = schema.parse_batch(batch, shape)
        clips = schema.decode_frames(parsed[schema.FRAMES], shape).numpy()
        frames.append(clips.reshape((-1, SIZE, SIZE, 3)))
        labels.append(np.repeat(parsed[schema.LABEL].numpy(), shape.num_frames))
    keras.utils.set_random_seed(0)
    # Behind the trainer's on-device augmentation layer, as dfd.train saves it: evaluate, predict and
    # export must treat it as the identity.
    model = augmentation.wrap(models.build_model("image_cnn", (SIZE, SIZE, 3), **SMALL_CNN),
                              augmentation.DeviceAugment(flip=True, crop=0.1, brightness=0.1, blur=0.5), seed=0)
    model.compile(keras.optimizers.Adam(0.01), loss=models.loss_for(model), metrics=models.metrics_for(model))
    model.fit(np.concatenate(frames), np.concatenate(labels), epochs=6, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """An image model trained on 4-frame video records: evaluation aggregates frame scores per clip."""
    root = tmp_path_factory.mktemp("video_run")
    data_dir = write_fake_dataset(root / "data", kind="video", num_frames=4, size=SIZE,
                                  counts={"train": (8, 8), "val": (4, 4), "test": (4, 4)})
    spec = DatasetMetadata.load(data_dir).preprocessing
    return make_run(root / "run", spec, fitted_image_model(data_dir), data_dir), data_dir


def test_evaluate_writes_metrics_plots_predictions_and_tensorboard(video_run, capsys):
    layout, data_dir = video_run
    result = evaluate.evaluate(layout.root, split="test", threshold_method="val_eer", aggregate="mean")
    out = layout.eval_dir("test")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["at_0.5"]["count"] == 8 and saved["at_threshold"]["count"] == 8
    assert saved["aggregate"] == "mean" and saved["threshold"]["method"] == "val_eer"
    assert saved["at_0.5"]["roc_auc"] > 0.8   # the trained model separates the synthetic classes
    threshold = json.loads(layout.threshold.read_text())["threshold"]
    assert threshold == pytest.approx(result["threshold"]["value"])
    for name in plots.PLOT_NAMES:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and set(rows[0]) == {"source", "label", "score", "predicted"}
    assert all(row["source"].startswith("test/") for row in rows)
    assert all(int(row["predicted"]) == int(float(row["score"]) >= threshold) for row in rows)
    frame_scores = json.loads((out / "frame_scores.json").read_text())
    assert all(len(scores) == 4 for scores in frame_scores.values())
    first = rows[0]
    assert float(first["score"]) == pytest.approx(np.mean(frame_scores[first["source"]]), abs=1e-5)
    assert list((layout.tensorboard / "eval" / "test").glob("events.out.tfevents.*"))
    printed = capsys.readouterr().out
    assert "Classification Report:" in printed and "threshold val_eer" in printed and "ROC AUC" in printed
    # Frame-level beside video-level, with the counts behind each: 8 test videos of 4 frames.
    assert saved["frame_level"]["num_frames"] == 32 and saved["frame_level"]["num_videos"] == 8
    assert saved["video_level"]["num_videos"] == 8 and saved["video_level"]["aggregate"] == "mean"
    assert saved["frame_level"]["roc_auc"] > 0.8
    assert saved["video_level"]["roc_auc"] == saved["at_0.5"]["roc_auc"]
    assert "Frame-level ROC AUC: " in printed and "on 32 frames of 8 videos" in printed
    assert "Video-level ROC AUC: " in printed
    # A later fixed-0.5 evaluation of another split keeps the chosen threshold for predict.
    evaluate.evaluate(layout.root, split="val", print_report=False)
    assert json.loads(layout.threshold.read_text())["threshold"] == pytest.approx(threshold)
    assert json.loads((layout.eval_dir("val") / "metrics.json").read_text())["threshold"]["value"] == 0.5


def test_evaluate_refuses_data_whose_frames_do_not_fit_and_scores_other_crops(video_run, tmp_path, capsys):
    layout, _ = video_run
    other = write_fake_dataset(tmp_path / "other", kind="video", num_frames=4, size=SIZE * 2, counts={"test": (1, 1)})
    with pytest.raises(ValueError, match=f"size: {SIZE} != {SIZE * 2}"):
        evaluate.evaluate(layout.root, split="test", data=other, print_report=False)
    # Another dataset's records of the model's frame size (JPEG images here, raw 4-frame clips in training)
    # feed an image model alike: scored, with the differences said (the cross-dataset table needs it).
    images = write_fake_dataset(tmp_path / "images", kind="image", size=SIZE, counts={"test": (2, 2)})
    result = evaluate.evaluate(layout.root, split="test", data=images, print_report=False)
    assert result["at_0.5"]["count"] == 4
    assert "converted otherwise than the model's data" in capsys.readouterr().out
    no_val = write_fake_dataset(tmp_path / "no_val", kind="video", num_frames=4, size=SIZE, counts={"test": (1, 1)})
    with pytest.raises(ValueError, match="no val examples; use --threshold=0.5"):
        evaluate.evaluate(layout.root, split="test", data=no_val, threshold_method="val_eer", print_report=False)


def test_lambda_model_is_refused(tmp_path):
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda x: keras.ops.cast(x, "float32") / 255.0)(inputs)))
    spec = PreprocessSpec(kind="image", num_frames=1, size=SIZE)
    layout = make_run(tmp_path / "run", spec, keras.Model(inputs, outputs))
    with pytest.raises(ValueError, match="Lambda layer .* safe mode"):
        loading.load(layout.root)


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    clip = synthetic.moving_clip(1, 12, 24, 32)
    synthetic.write_mp4(folder / "videos" / "clip.mp4", clip)
    (folder / "videos" / "._clip.mp4").write_bytes(b"\x00\x05\x16\x07")   # macOS resource fork: skipped
    (folder / "images").mkdir()
    assert cv2.imwrite(str(folder / "images" / "face.jpg"), cv2.cvtColor(clip[0], cv2.COLOR_RGB2BGR))
    # Starts like an mp4 (so it is taken for a video) but holds no stream: OpenCV cannot decode it.
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 10)
    return folder


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_run")
    spec = PreprocessSpec(kind="image", num_frames=1, size=SIZE, encoding="jpeg")
    keras.utils.set_random_seed(1)
    layout = make_run(root / "run", spec, models.build_model("image_cnn", (SIZE, SIZE, 3), **SMALL_CNN))
    layout.threshold.write_text(json.dumps({"threshold": 0.25, "method": "test"}))
    return layout


def test_predict_scores_video_and_image_and_reports_broken_file(image_run, media_files):
    loaded = loading.load(image_run.root)
    paths = predict.find_files([str(media_files)])
    assert [Path(p).name for p in paths] == ["broken.mp4", "face.jpg", "clip.mp4"]
    results = {Path(r.path).name: r for r in predict.predict_files(loaded, paths, video_frames=5, progress=None)}
    broken, image, video = results["broken.mp4"], results["face.jpg"], results["clip.mp4"]
    assert broken.error and broken.fake_probability is None
    assert image.error is None and image.kind == "image" and image.frames_used == 1
    assert video.error is None and video.kind == "video" and video.frames_used == 5
    assert len(video.frame_scores) == 5 and len(video.frame_indices) == 5
    assert video.fake_probability == pytest.approx(np.mean(video.frame_scores), abs=1e-5)
    for result in (image, video):
        assert 0.0 <= result.fake_probability <= 1.0
        assert result.threshold == 0.25
        assert result.label == ("fake" if result.fake_probability >= 0.25 else "real")
    # The image's score is the model's output on the converter's record of that file.
    spec = loaded.spec
    frames = schema.parse_example_numpy(records.make_record(image.path, spec, 0, ""), spec.record_shape)[schema.FRAMES]
    assert image.fake_probability == pytest.approx(loaded.score(frames)[0], abs=1e-6)


def test_predict_cli_json_and_exit_codes(image_run, media_files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    output = tmp_path / "predictions.json"
    command = [sys.executable, "-m", "dfd.predict", f"--model={image_run.root}", f"--output={output}",
               str(media_files / "images" / "face.jpg"), str(media_files / "broken.mp4")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entries = json.loads(output.read_text())
    assert [("error" in entry) for entry in entries] == [False, True]
    assert entries[0]["label"] in ("real", "fake") and "files/s" in done.stderr
    # Nothing scorable: exit code 1, still one error entry per file (in-process: no second TF start-up).
    from dfd.predict import predict_command
    stdout = io.StringIO()
    assert predict_command(str(image_run.root), [str(media_files / "broken.mp4")], "csv", stdout=stdout) == 1
    lines = stdout.getvalue().splitlines()
    assert lines[0].startswith("path,kind,fake_probability") and "broken.mp4" in lines[1] and len(lines) == 2


def test_predict_input_equals_the_converters_record(tmp_path):
    """Parity: the frames predict feeds for a video are those of the record the converter wrote for it."""
    synthetic.write_video_folder(tmp_path / "source", {"train": 1, "val": 1, "test": 1}, num_frames=10,
                                 height=24, width=32)
    summary = convert.convert(convert.ConvertConfig(
        output=str(tmp_path / "shards"), source=str(tmp_path / "source"), kind="video", num_frames=4,
        frame_size=SIZE, encoding="jpeg", workers=1, progress=False))
    meta = DatasetMetadata.load(summary.output)
    spec = meta.preprocessing
    written = {}
    for serialized in tf.data.TFRecordDataset([str(p) for p in meta.shard_paths("test")]):
        record = schema.parse_example_numpy(serialized.numpy(), spec.record_shape)
        written[Path(record[schema.SOURCE]).name] = record
    assert written
    for name, record in written.items():
        path = next((tmp_path / "source").rglob(name))
        decoded = predict.decode_records([predict.file_record(str(path), spec)], spec)
        np.testing.assert_array_equal(decoded[schema.FRAMES][0], record[schema.FRAMES])
        np.testing.assert_array_equal(decoded[schema.FRAME_INDICES][0], record[schema.FRAME_INDICES])


def test_export_round_trip_and_predict_from_export(video_run, media_files, tmp_path):
    layout, _ = video_run
    difference = export.export(layout.root, tmp_path / "export", verbose=False)
    assert difference <= export.MAX_ABS_DIFFERENCE
    out = tmp_path / "export"
    for name in ("saved_model.pb", "model.keras", "preprocessing.json", "threshold.json"):
        assert (out / name).is_file()
    reloaded = tf.saved_model.load(str(out))
    signature = reloaded.signatures["serving_default"]
    assert signature.structured_input_signature[1]["pixels"].dtype == tf.uint8
    batch = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    served = next(iter(signature(pixels=tf.constant(batch)).values())).numpy()
    source = loading.load(layout.root)
    assert served.shape == (3,)
    np.testing.assert_allclose(served, source.score(batch), atol=1e-6)
    # dfd.predict takes the export directory as --model.
    from_export = loading.load(out)
    video, image = predict.predict_files(
        from_export, [str(media_files / "videos" / "clip.mp4"), str(media_files / "images" / "face.jpg")],
        progress=None)
    # An image model trained on 4-frame clips: a video gets the training sampling, an image is one frame.
    assert video.error is None and len(video.frame_scores) == 4
    assert image.error is None and image.frames_used == 1 and image.frame_scores is None
    with pytest.raises(ValueError, match="not empty"):
        export.export(layout.root, out, verbose=False)
    assert export.export(layout.root, out, verbose=False, overwrite=True) <= export.MAX_ABS_DIFFERENCE
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="earlier export only"):
        export.export(layout.root, tmp_path / "notes", verbose=False, overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_image_model_on_video_records_ignores_padding_frames(tmp_path):
    """A clip padded with copies of its last frame scores as the mean of its real frames only."""
    data_dir = write_fake_dataset(tmp_path / "data", kind="video", num_frames=4, size=8,
                                  counts={"test": (1, 1)}, shards_per_split=1)
    spec = DatasetMetadata.load(data_dir).preprocessing
    # P(fake) = mean pixel value / 255, so a frame filled with v scores v / 255.
    pixels = keras.Input((8, 8, 3), dtype="uint8")
    mean = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(pixels))
    dense = keras.layers.Dense(1, use_bias=False)
    model = keras.Model(pixels, dense(mean))
    dense.set_weights([np.full((3, 1), 1 / 3, np.float32)])

    def clip(values):
        return np.stack([np.full((8, 8, 3), value, np.uint8) for value in values])

    common = dict(height=8, width=8, group="g", source_frame_count=3)
    with tf.io.TFRecordWriter(str(data_dir / "test-00000-of-00001.tfrecord")) as writer:
        writer.write(schema.encode_example(frames=clip([51, 102, 153, 153]), label=1, source="short.mp4",
                                           frame_indices=[0, 1, 2, 2], padded_frames=1, **common))
        writer.write(schema.encode_example(frames=clip([0, 0, 51, 51]), label=0, source="long.mp4",
                                           frame_indices=[0, 1, 2, 3], **common))
    # The shard was replaced: metadata.json must say its new size (readers check it).
    meta = json.loads((data_dir / "metadata.json").read_text())
    meta["splits"]["test"]["shards"][0]["bytes"] = (data_dir / "test-00000-of-00001.tfrecord").stat().st_size
    (data_dir / "metadata.json").write_text(json.dumps(meta))
    loaded = loading.LoadedModel(model, spec, 0.5, "test", tmp_path / "model.keras")
    scored = evaluate.score_split(loaded, DatasetMetadata.load(data_dir), "test", aggregate="mean")
    assert list(scored.sources) == ["short.mp4", "long.mp4"]
    assert list(scored.labels) == [1, 0]
    np.testing.assert_allclose(scored.scores, [0.4, 0.1], atol=1e-6)      # not 0.45 with the padded copy
    np.testing.assert_allclose(scored.frame_scores["short.mp4"], [0.2, 0.4, 0.6], atol=1e-6)
    maximum = evaluate.score_split(loaded, DatasetMetadata.load(data_dir), "test", aggregate="max")
    np.testing.assert_allclose(maximum.scores, [0.6, 0.2], atol=1e-6)


def test_backbone_models_through_evaluate_predict_and_export(media_files, tmp_path):
    """The keras.applications models go through the same paths: an EfficientNet video model and image model."""
    data_dir = write_fake_dataset(tmp_path / "data", kind="video", num_frames=2, size=32,
                                  counts={"val": (1, 1), "test": (1, 1)}, shards_per_split=1)
    spec = DatasetMetadata.load(data_dir).preprocessing
    keras.utils.set_random_seed(0)
    video_model = models.build_model("efficientnet_b0_video", (2, 32, 32, 3), temporal="mean")
    layout = make_run(tmp_path / "video_run", spec, video_model, data_dir)
    result = evaluate.evaluate(layout.root, split="test", print_report=False)
    saved = json.loads((layout.eval_dir("test") / "metrics.json").read_text())
    assert saved["at_0.5"]["count"] == 2 and 0 <= result["threshold"]["value"] <= 1
    [video] = predict.predict_files(loading.load(layout.root), [str(media_files / "videos" / "clip.mp4")],
                                    progress=None)
    assert video.error is None and video.frames_used == 2 and 0 <= video.fake_probability <= 1
    assert export.export(layout.root, tmp_path / "export", verbose=False) <= export.MAX_ABS_DIFFERENCE

    image_spec = PreprocessSpec(kind="image", num_frames=1, size=32, encoding="jpeg")
    image_layout = make_run(tmp_path / "image_run", image_spec, models.build_model("efficientnet_b0", (32, 32, 3)))
    [image] = predict.predict_files(loading.load(image_layout.root), [str(media_files / "images" / "face.jpg")],
                                    progress=None)
    assert image.error is None and image.kind == "image" and 0 <= image.fake_probability <= 1


def test_a_run_trained_on_frames_evaluates_at_both_levels_and_predicts_videos(media_files, tmp_path):
    """dfd.train with --frames_per_clip=2 on video records, then dfd.evaluate and dfd.predict on the run."""
    from dfd import train_flags
    from dfd.training.run import train

    data_dir = write_fake_dataset(tmp_path / "data", kind="video", num_frames=4, size=SIZE,
                                  counts={"train": (8, 8), "val": (4, 4), "test": (3, 3)})
    config = train_flags.TrainConfig(
        data=str(data_dir), run_dir=str(tmp_path / "run"), model="image_cnn", hparams=dict(SMALL_CNN),
        frames_per_clip=2, epochs=1, batch_size=8, verbose=0, patience=0, precision="float32",
        augment_crop=0.1, augment_noise=0.02)
    train(config)
    result = evaluate.evaluate(config.run_dir, split="test", print_report=False)
    assert result["frame_level"]["num_frames"] == 24 and result["video_level"]["num_videos"] == 6
    assert result["frame_level"]["roc_auc"] is not None and result["video_level"]["roc_auc"] is not None
    loaded = loading.load(config.run_dir)
    [video] = predict.predict_files(loaded, [str(media_files / "videos" / "clip.mp4")], progress=None)
    assert video.error is None and len(video.frame_scores) == 4   # the training records' 4 frames


def test_evaluate_and_export_write_threshold_json_with_the_same_keys(video_run, tmp_path):
    import shutil

    run = RunLayout(shutil.copytree(video_run[0].root, tmp_path / "run"))   # the shared run keeps its threshold
    evaluate.evaluate(run.root, split="val", threshold_method="val_youden", print_report=False)
    chosen = json.loads(run.threshold.read_text())
    export.export(run.root, tmp_path / "export", verbose=False)
    copied = json.loads((tmp_path / "export" / loading.THRESHOLD_FILE).read_text())
    assert set(chosen) == set(copied) == {"threshold", "method", "chosen_on", "temperature"}
    assert chosen["method"] == copied["method"] == "val_youden" and chosen["chosen_on"].startswith("val split of")
    assert copied["chosen_on"].startswith(f"copied from {run.threshold}")
    assert copied["threshold"] == pytest.approx(chosen["threshold"])
    assert loading.load(tmp_path / "export").threshold == pytest.approx(loading.load(run.root).threshold)
    # Files written before "chosen_on" and "temperature" existed still read.
    run.threshold.write_text(json.dumps({"threshold": 0.3, "method": "val_eer"}))
    assert loading.read_threshold_file(run.root) == {"threshold": 0.3, "method": "val_eer", "chosen_on": "",
                                                     "temperature": 1.0}


def test_every_reader_finds_a_runs_model_file_with_one_priority(tmp_path):
    from dfd.models import cnn_lstm

    run = RunLayout(tmp_path)
    with pytest.raises(ValueError, match="holds no model"):
        loading.model_file(run.root)
    with pytest.raises(ValueError, match="neither model.keras nor checkpoints/best.keras"):
        cnn_lstm.frame_cnn_file(str(run.root))
    run.final_model.write_bytes(b"last epoch")   # an export directory holds only model.keras
    assert loading.model_file(run.root) == cnn_lstm.frame_cnn_file(str(run.root)) == run.final_model
    run.best_model.parent.mkdir()
    run.best_model.write_bytes(b"best epoch")    # a run: the best epoch by validation AUC wins, for every reader
    assert loading.model_file(run.root) == cnn_lstm.frame_cnn_file(str(run.root)) == run.best_model
    run.final_model.unlink()                      # a run killed before its end
    assert loading.model_file(run.root) == cnn_lstm.frame_cnn_file(str(run.root)) == run.best_model
