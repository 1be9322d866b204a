"""--data_service: a dispatcher and two workers (separate processes on 127.0.0.1) feed dfd.train."""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfd import train_flags
from dfd.data import pipeline
from dfd.testing.fake_shards import write_fake_dataset
from dfd.training.run import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"conv_filters": "4,4", "kernel_sizes": "3", "frame_dense_units": 8, "lstm_units": 4, "head_units": 4}
BATCH = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args, log: Path) -> subprocess.Popen:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "dfd.data_service", *args], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        assert process.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {log}: {log.read_text()}")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """grpc://127.0.0.1:P with two workers; yields (address, worker processes, log folder)."""
    logs = tmp_path_factory.mktemp("service")
    port = _free_port()
    # A short heartbeat timeout so the kill test's dead worker is dropped in seconds.
    dispatcher = _start(["dispatcher", f"--port={port}", "--worker_timeout_s=3"], logs / "dispatcher.log")
    processes = [dispatcher]
    try:
        _wait_for(logs / "dispatcher.log", "serving at", dispatcher)
        for index in range(2):
            log = logs / f"worker{index}.log"
            processes.append(_start(["worker", f"--dispatcher=127.0.0.1:{port}", f"--port={_free_port()}",
                                     "--worker_host=127.0.0.1"], log))
            _wait_for(log, "serving at", processes[-1])
        _wait_for(logs / "dispatcher.log", "2 workers", dispatcher)
        yield f"grpc://127.0.0.1:{port}", processes[1:], logs
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 16 training clips in 4 shards: the dispatcher hands files to both workers.
    return write_fake_dataset(tmp_path_factory.mktemp("data"), num_frames=2, size=16, shards_per_split=4,
                              counts={"train": (8, 8), "val": (4, 4)})


def _clip_keys(dataset, steps):
    keys = []
    for clips, labels in dataset.take(steps):
        keys += [(clip.tobytes(), int(label)) for clip, label in zip(clips.numpy(), labels.numpy(), strict=True)]
    return keys


def test_every_example_is_served_once_per_epoch_and_train_runs_through_the_service(service, data, tmp_path):
    address = service[0]
    local, num_train = pipeline.make_eval_dataset(pipeline.open_dataset(data), "train", batch_size=16)
    expected = collections.Counter(_clip_keys(local, 1))
    assert num_train == 16 and len(expected) == 16

    served, num_served, _ = pipeline.make_train_dataset(pipeline.open_dataset(data), batch_size=BATCH, repeat=True,
                                                        augment=pipeline.NO_AUGMENT, data_service=address)
    steps = pipeline.steps_per_epoch(num_served, BATCH, training=True)
    # Two epochs of steps from metadata.json: every clip exactly twice, with its own label.
    seen = collections.Counter(_clip_keys(served, 2 * steps))
    assert seen == collections.Counter({key: 2 for key in expected})

    config = train_flags.TrainConfig(data=str(data), run_dir=str(tmp_path / "run"), hparams=dict(TINY), epochs=1,
                                     batch_size=BATCH, verbose=0, patience=0, precision="float32",
                                     data_service=address)
    summary = train(config)
    assert summary["epochs_run"] == 1 and summary["num_train"] == 16
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert len(history) == 1 and "val_auc" in history[0]   # validation ran (locally)


def test_a_worker_killed_mid_epoch_ends_the_trainer_with_a_clear_error(service, data, tmp_path):
    address, workers, _ = service
    run = tmp_path / "run"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    trainer = subprocess.Popen(
        [sys.executable, "-m", "dfd.train", f"--data={data}", f"--run_dir={run}", f"--data_service={address}",
         "--data_service_timeout_s=15", "--epochs=100", f"--batch_size={BATCH}", "--verbose=0", "--patience=0",
         "--precision=float32", *[f"--{name}={value}" for name, value in TINY.items()]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "history.json").is_file():   # training runs through the service ...
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.communicate()[0][-3000:]
            time.sleep(0.2)
        workers[1].kill()   # ... when a worker dies (SIGKILL: no goodbye to the dispatcher)
        output = trainer.communicate(timeout=150)[0]   # bounded: the watchdog's 15 s, not for ever
    finally:
        if trainer.poll() is None:
            trainer.kill()
    epochs = len(json.loads((run / "history.json").read_text())["epochs"])
    print(f"worker killed after epoch 1: trainer exit {trainer.returncode} after {epochs} epochs")
    if trainer.returncode == 0:   # recovered: the survivor served every remaining epoch
        assert epochs == 100, output[-3000:]
    else:   # the stalled step ended with the watchdog's error, and the run can be resumed
        assert trainer.returncode == 75, output[-3000:]
        assert "no training batch from the tf.data service" in output and "re-run the same command" in output
        assert epochs < 100 and (run / "backup").is_dir()


def test_bad_service_settings_are_refused_with_what_to_do(data, tmp_path):
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        train_flags.TrainConfig(data=str(data), run_dir=str(tmp_path / "run"), data_service="127.0.0.1:5050")
    with pytest.raises(ValueError, match="--cache cannot be combined with --data_service"):
        pipeline.make_train_dataset(pipeline.open_dataset(data), batch_size=BATCH, cache="memory",
                                    data_service="grpc://127.0.0.1:1")
