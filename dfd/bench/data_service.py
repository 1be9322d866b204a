"""tf.data service benchmark: `python -m dfd.bench data_service [--clips=512]`.

An input-bound setting: JPEG-encoded 16 x 64 x 64 clips (the costliest decode), the training
pipeline of dfd.data.pipeline.make_train_dataset, read as fast as it comes (no model: the clips/s are
the input pipeline's limit), with two host workloads: "flip" (the default augmentation) and
"heavy" (flip, brightness and contrast 0.1, SBI pseudo-fakes on half the real clips). Measured
side by side, alternating, best of each:
  (a) local: the trainer's own pipeline in a process limited to one core (CPU affinity, which
      TensorFlow's thread pools follow)
  (b) service: the same pipeline through `--data_service` with two workers
      (`python -m dfd.data_service worker`), each limited to one core, the trainer unpinned
Prints clips/s of both and b/a on the last line.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dfd import bench
from dfd.settings import setting

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Settings:
    clips: int = setting(512, "Training clips (JPEG, 16 x 64 x 64).")
    batch_size: int = setting(32, "Batch size.")
    epochs: int = setting(3, "Epochs read per measurement (the first one warms up and is not timed).")


def _env() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _pinned(core: int):
    return lambda: os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


def read_rate(data: str, batch_size: int, epochs: int, heavy: bool, service: str = "") -> float:
    """Clips/s of the training pipeline over epochs 2..N (epoch 1 warms up)."""
    from dfd.data import pipeline
    from dfd.data.pseudo_fakes import PseudoFakes

    extra = dict(augment=pipeline.Augment(flip=True, brightness=0.1, contrast=0.1),
                 pseudo_fakes=PseudoFakes("sbi", 0.5)) if heavy else {}
    dataset, count, _ = pipeline.make_train_dataset(pipeline.open_dataset(data), batch_size=batch_size, repeat=True,
                                                    data_service=service, **extra)
    steps = pipeline.steps_per_epoch(count, batch_size, training=True)
    iterator = iter(dataset)
    for _ in range(steps):
        next(iterator)
    start = time.perf_counter()
    for _ in range((epochs - 1) * steps):
        next(iterator)
    return (epochs - 1) * steps * batch_size / (time.perf_counter() - start)


def _child(argv: list[str]) -> None:
    print(read_rate(argv[0], int(argv[1]), int(argv[2]), argv[3] == "heavy"))


def local_rate(data: Path, values, heavy: bool) -> float:
    code = "import sys; from dfd.bench.data_service import _child; _child(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, str(data), str(values.batch_size), str(values.epochs),
                           "heavy" if heavy else "flip"],
                          capture_output=True, text=True, env=_env(), preexec_fn=_pinned(0))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(log: Path, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log}: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def start_service(root: Path, workers: int) -> tuple[str, list]:
    port = _free_port()
    server = [sys.executable, "-m", "dfd.data_service"]
    processes = [subprocess.Popen(server + ["dispatcher", f"--port={port}"], env=_env(),
                                  stdout=open(root / "dispatcher.log", "w"), stderr=subprocess.STDOUT)]
    _wait_for(root / "dispatcher.log", "serving at")
    for index in range(workers):
        log = root / f"worker{index}.log"
        processes.append(subprocess.Popen(
            server + ["worker", f"--dispatcher=127.0.0.1:{port}", f"--port={_free_port()}", "--worker_host=127.0.0.1"],
            env=_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT, preexec_fn=_pinned(index)))
        _wait_for(log, "serving at")
    _wait_for(root / "dispatcher.log", f"{workers} workers")
    return f"grpc://127.0.0.1:{port}", processes


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    from dfd.testing.fake_shards import write_fake_dataset

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        data = write_fake_dataset(root / "data", num_frames=16, size=64, encoding="jpeg", shards_per_split=8,
                                  counts={"train": (values.clips // 2, values.clips // 2), "val": (4, 4)})
        service, processes = start_service(root, 2)
        try:
            results = {}
            for setting in ("flip", "heavy"):
                local, served = 0.0, 0.0
                for _ in range(2):   # alternate: other processes share the machine
                    local = max(local, local_rate(data, values, setting == "heavy"))
                    served = max(served, read_rate(str(data), values.batch_size, values.epochs,
                                                   setting == "heavy", service))
                results[setting] = (local, served)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
    print(f"\nmachine: {os.cpu_count()} CPU cores; {values.clips} JPEG clips of 16 x 64 x 64, "
          f"batch {values.batch_size}")
    print(f"{'setting':<8}{'(a) local, 1 core':>20}{'(b) service, 2 workers':>24}{'b/a':>7}")
    for setting, (local, served) in results.items():
        print(f"{setting:<8}{local:>20.1f}{served:>24.1f}{served / local:>7.2f}")
    local, served = results["heavy"]
    print(f"b/a = {served / local:.2f} (heavy setting: two 1-core service workers against the trainer's "
          "own pipeline on one core)")
