"""dfd.export --format=onnx and dfd.predict --model=FILE.onnx on tiny runs: the file verifies itself against
Keras, carries the threshold, calibration and preprocessing, and scores real media files like the run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from dfd import train_flags
from dfd.evaluation import calibration, export, loading, predict
from dfd.evaluation.onnx_model import OnnxModel
from dfd.predict import predict_command
from dfd.testing import synthetic
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SIZE = 16
TINY_LSTM = {"conv_filters": "4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
TEMPERATURE = 1.7


def calibrate(run_dir: Path, threshold: float) -> None:
    """threshold.json chosen on raw scores and a calibration.json, as dfd.evaluate --calibrate leaves them."""
    (run_dir / loading.THRESHOLD_FILE).write_text(json.dumps({"threshold": threshold, "method": "test"}))
    (run_dir / calibration.CALIBRATION_FILE).write_text(json.dumps({"temperature": TEMPERATURE}))


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    folder = synthetic.write_clip_and_photo(tmp_path_factory.mktemp("media"), seed=3)
    return folder


def scores_by_name(entries) -> dict:
    return {Path(entry["path"]).name: entry for entry in entries}


def test_trained_cnn_lstm_exports_to_onnx_and_predicts_like_the_run(media_files, tmp_path):
    """The trainer's cnn_lstm behind FrameResize and the augmentation layer (TimeDistributed, LSTM), calibrated."""
    data_dir = write_fake_dataset(tmp_path / "data", kind="video", num_frames=4, size=SIZE,
                                  counts={"train": (4, 4), "val": (2, 2)})
    run_dir = tmp_path / "run"
    train(train_flags.TrainConfig(data=str(data_dir), run_dir=str(run_dir), model="cnn_lstm", hparams=dict(TINY_LSTM),
                                  input_size=12, augment_crop=0.1, augment_brightness=0.1, epochs=1, batch_size=8,
                                  verbose=0, patience=0, precision="float32"))
    calibrate(run_dir, 0.45)
    keras_run = loading.load(run_dir)
    layer_names = [layer.name for layer in keras_run.model.layers]
    assert "input_resize" in layer_names and "augmentation" in layer_names

    output = tmp_path / "model.onnx"
    done = subprocess.run([sys.executable, "-m", "dfd.export", f"--run_dir={run_dir}", "--format=onnx",
                           f"--output={output}"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    difference = float(done.stdout.split("max abs difference ")[1].split()[0])
    # 16->12 is an inexact resize ratio: a few pixels one grey level off (onnx_export.RESIZED_MAX_ABS_DIFFERENCE).
    assert difference < 1e-4 and "FrameResize 16x16->12" in done.stdout and "baked into the ONNX graph" in done.stdout

    proto = onnx.load(str(output))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert float(meta["dfd.threshold"]) == pytest.approx(keras_run.threshold)
    assert float(meta["dfd.temperature"]) == TEMPERATURE
    assert json.loads(meta["dfd.preprocessing"]) == keras_run.spec.to_dict()
    assert meta["dfd.keras_backend"] == "tensorflow" and meta["dfd.version"]
    [pixels] = proto.graph.input
    assert pixels.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = pixels.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [4, SIZE, SIZE, 3]

    done = subprocess.run([sys.executable, "-m", "dfd.predict", f"--model={output}", str(media_files / "clip.mp4")],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from_onnx = scores_by_name(json.loads(done.stdout))["clip.mp4"]
    [from_keras] = predict.predict_files(keras_run, [str(media_files / "clip.mp4")], progress=None)
    assert from_onnx["fake_probability"] == pytest.approx(from_keras.fake_probability, abs=1e-4)
    assert from_onnx["temperature"] == TEMPERATURE and from_onnx["label"] == from_keras.label
    assert from_onnx["threshold"] == pytest.approx(from_keras.threshold, abs=1e-6)


def test_image_model_onnx_scores_jpeg_and_video_frames_and_refuses_misuse(media_files, tmp_path):
    """An image model trained on frames of video records scores a JPEG and a video's frames like its run."""
    data_dir = write_fake_dataset(tmp_path / "data", kind="video", num_frames=4, size=SIZE,
                                  counts={"train": (4, 4), "val": (1, 1)})
    run_dir = tmp_path / "run"
    train(train_flags.TrainConfig(data=str(data_dir), run_dir=str(run_dir), model="image_cnn", frames_per_clip=2,
                                  hparams={"conv_filters": "4", "kernel_sizes": "3", "dense_units": 8}, epochs=1,
                                  batch_size=8, verbose=0, patience=0, precision="float32"))
    (run_dir / loading.THRESHOLD_FILE).write_text(json.dumps({"threshold": 0.3, "method": "test"}))
    output = tmp_path / "image.onnx"
    assert export.export(run_dir, output, verbose=False, export_format="onnx") < 1e-4

    loaded = loading.load(output)
    assert isinstance(loaded, OnnxModel) and loaded.input_shape == (SIZE, SIZE, 3) and loaded.scores_frames
    assert loaded.threshold == 0.3 and loaded.temperature == 1.0 and loaded.spec == loading.load(run_dir).spec
    batch = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)   # dynamic batch
    np.testing.assert_allclose(loaded.score(batch), loading.load(run_dir).score(batch), atol=1e-6)
    paths = [str(media_files / "face.jpg"), str(media_files / "clip.mp4")]
    from_onnx = {Path(r.path).name: r for r in predict.predict_files(loaded, paths, progress=None)}
    from_keras = {Path(r.path).name: r for r in predict.predict_files(loading.load(run_dir), paths, progress=None)}
    for name in ("face.jpg", "clip.mp4"):
        assert from_onnx[name].error is None
        assert from_onnx[name].fake_probability == pytest.approx(from_keras[name].fake_probability, abs=2e-6)
    assert len(from_onnx["clip.mp4"].frame_scores) == 4
    # dfd.serve takes it too: its model description, and no Grad-CAM crops (no layers).
    from dfd.serve.app import model_description
    from dfd.serve.batcher import Batcher

    options = {"video_frames": 16, "aggregate": "mean", "max_upload_mb": 1}
    assert model_description(loaded, options)["name"] == "image" and model_description(loaded, options)["threshold"]
    batcher = Batcher(loaded, explain_crops=True)
    assert not batcher.explainable
    batcher.close()

    with pytest.raises(ValueError, match="exists; choose a new --output file or pass --overwrite"):
        export.export(run_dir, output, verbose=False, export_format="onnx")
    assert export.export(run_dir, output, verbose=False, overwrite=True, export_format="onnx") < 1e-4
    with pytest.raises(ValueError, match="name ending in .onnx"):
        export.export(run_dir, tmp_path / "model_dir", verbose=False, export_format="onnx")
    with pytest.raises(ValueError, match="no layers to explain"):
        predict_command(str(output), paths, explain=str(tmp_path / "explain"))
    plain = onnx.load(str(output))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not an ONNX file written by dfd.export"):
        loading.load(tmp_path / "plain.onnx")


def test_torch_backend_exports_a_calibrated_cnn_lstm(tmp_path):
    """KERAS_BACKEND=torch (one backend per process, so a subprocess): torch.onnx's path, dynamic batch."""
    script = textwrap.dedent(f"""
        import json, keras
        from dfd import models
        from dfd.data.preprocessing import PreprocessSpec
        from dfd.evaluation import onnx_export, loading
        from dfd.run_layout import RunLayout
        assert keras.backend.backend() == "torch"
        keras.utils.set_random_seed(0)
        layout = RunLayout({str(tmp_path / "run")!r})
        layout.best_model.parent.mkdir(parents=True)
        models.build_model("cnn_lstm", (4, {SIZE}, {SIZE}, 3), conv_filters=(4,), kernel_sizes=(3,),
                           frame_dense_units=8, lstm_units=4).save(layout.best_model)
        PreprocessSpec(kind="video", num_frames=4, size={SIZE}).save(layout.preprocessing)
        (layout.root / "threshold.json").write_text(json.dumps({{"threshold": 0.4, "method": "test"}}))
        (layout.root / "calibration.json").write_text(json.dumps({{"temperature": {TEMPERATURE}}}))
        difference = onnx_export.export_onnx(layout.root, {str(tmp_path / "torch.onnx")!r}, verbose=False)
        print("difference", difference)
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**ENV, "KERAS_BACKEND": "torch"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split("difference ")[1]) < 1e-4
    loaded = loading.load(tmp_path / "torch.onnx")   # read back here, on the tensorflow backend
    assert loaded.input_shape == (4, SIZE, SIZE, 3) and loaded.temperature == TEMPERATURE
    assert loaded.threshold == pytest.approx(calibration.to_calibrated_threshold(0.4, TEMPERATURE))
    meta = {entry.key: entry.value for entry in onnx.load(str(tmp_path / "torch.onnx")).metadata_props}
    assert meta["dfd.keras_backend"] == "torch"
    batch = np.random.default_rng(1).integers(0, 256, (3, 4, SIZE, SIZE, 3), dtype=np.uint8)
    # The same .keras file on this process's tensorflow backend gives the same calibrated P(fake).
    np.testing.assert_allclose(loaded.score(batch), loading.load(tmp_path / "run").score(batch), atol=1e-5)
