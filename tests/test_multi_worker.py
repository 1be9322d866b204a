"""--strategy=multi_worker: two worker processes on 127.0.0.1 train one epoch; the chief writes the run dir."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dfd.run_layout import RunLayout
from dfd.testing.fake_shards import write_fake_dataset

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_train_one_epoch_and_only_the_chief_writes(tmp_path):
    # Two shards per split: with file-level auto-sharding each worker reads one of them
    # (tests/test_pipeline.py checks the split of files itself).
    data = write_fake_dataset(tmp_path / "data", num_frames=2, size=16, counts={"train": (8, 8), "val": (4, 4)})
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    run_dirs = [tmp_path / "run", tmp_path / "run"]   # the same command on both workers
    processes = []
    for index in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dfd.train", "--strategy=multi_worker", f"--data={data}",
             f"--run_dir={run_dirs[index]}", "--epochs=1", "--batch_size=8", "--verbose=0", "--patience=0",
             "--precision=float32", "--conv_filters=4,4", "--kernel_sizes=3", "--frame_dense_units=8",
             "--lstm_units=4", "--head_units=4"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    run = RunLayout(tmp_path / "run")
    summary = json.loads(run.summary.read_text())
    assert summary["replicas"] == 2 and summary["epochs_run"] == 1
    assert run.final_model.is_file() and run.flags.is_file() and run.best_model.is_file()
    assert "dfd.train: best epoch" in outputs[0]       # the chief prints the summary ...
    assert "dfd.train: best epoch" not in outputs[1]   # ... a worker does not


def test_the_keras_patches_refuse_an_untested_keras_unless_allowed(monkeypatch):
    from dfd.training import keras_patches

    monkeypatch.delenv(keras_patches.ALLOW_UNTESTED_ENV, raising=False)
    keras_patches.check_keras_version("3.15.1")   # the tested line passes
    with pytest.raises(RuntimeError, match=r"tested on Keras 3\.15\.x only; this is Keras 3\.16\.0"):
        keras_patches.check_keras_version("3.16.0")
    monkeypatch.setenv(keras_patches.ALLOW_UNTESTED_ENV, "1")
    keras_patches.check_keras_version("3.16.0")   # the documented override
