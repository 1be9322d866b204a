"""Training input beyond the trainer's own CPUs: tf.data service servers and the pipeline's distribution.

    python -m dfd.data_service dispatcher --port=5050                          # one, anywhere
    python -m dfd.data_service worker --dispatcher=HOST:5050 --port=5051       # one per input machine
    python -m dfd.train --data_service=grpc://HOST:5050 ...                    # the trainer(s)

The servers run until stopped (Ctrl-C or SIGTERM) and log a line when they start and whenever
the number of workers or tasks they serve changes. The workers read the dataset's shards
themselves: --data must be a path every worker sees (a shared filesystem), as for the trainer.

What runs where (`distribute`): the training pipeline of dfd.data.pipeline.make_train_dataset up to
its last map (file shuffle, TFRecord reading, record shuffle, batched parse, decode,
pseudo-fakes, augmentation) runs on the service workers; the trainer only receives decoded
uint8 batches, re-batches them and prefetches. Validation stays local (one pass, in order).

Processing mode: distributed_epoch (ShardingPolicy.DYNAMIC), from the tf.data service guide:
the dispatcher hands out the shard files one at a time to whichever worker asks, so each file
is read by exactly one worker per epoch, fast workers take more files, and a worker added
mid-run gets work at once. "parallel_epochs" (OFF) would have every worker read the whole
dataset, an epoch of N workers being N epochs; static sharding (FILE) fixes files to workers,
so the slowest worker sets the pace and a lost worker's files are lost every epoch.

Epochs keep their meaning and size: each repetition of the served dataset is one new
distributed_epoch iteration over all files (every example once), and the trainer re-batches the
stream to --batch_size (each worker's last batch of an epoch is partial), so an epoch is
count // batch_size steps from metadata.json, as without the service; an epoch's last
count % batch_size examples open the next one, as the local pipeline's file repeat does.

Failures: a worker killed mid-epoch leaves the trainer waiting. Measured on TF 2.21
(tests/test_data_service.py, dispatcher --worker_timeout_s=3): the training step never got its
batch, long after the dispatcher's heartbeat timeout. TF's client (DataServiceClient) skips an
unreachable worker's task and retries it until the dispatcher removes the task, which did not
happen for the dead worker's unfinished part of the epoch. tf.data offers no timeout for that
wait, so the trainer carries a
watchdog (`StallWatchdog`, --data_service_timeout_s): when one training step has waited that
long, it prints a clear error naming the dispatcher and exits the process (status 75,
EX_TEMPFAIL); re-running the same command resumes from the last completed epoch
(BackupAndRestore), on the workers still alive. A dispatcher restarted with the same
--work_dir recovers its state from its journal.

Several trainers (--strategy=multi_worker): each trainer reads from one shared job
(`shared_job_name`), so the workers' output is split between the trainers and each example is
still seen once per epoch by one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

from absl import flags

from dfd import cli

# A worker that misses heartbeats for this long is dropped by the dispatcher (TF's default is
# 1 min); no new work goes to it then (a stalled epoch is the trainer's watchdog's business).
DEFAULT_WORKER_TIMEOUT_S = 10.0
# How often a server checks whether what it serves changed (only then does it log).
LOG_INTERVAL_S = 2.0


# Batches travel uncompressed: they are decoded uint8 frames, which snappy (tf.data service's
# default, "AUTO") barely shrinks, while compressing on the worker and decompressing here costs
# CPU on both sides. Measured (bench data_service, 2 workers): 257 clips/s with "AUTO", 275 without.
COMPRESSION = None


def check_address(service: str) -> str:
    """The dispatcher address for --data_service, checked: grpc://HOST:PORT."""
    if not service.startswith("grpc://") or ":" not in service[len("grpc://"):]:
        raise ValueError(f"--data_service must be grpc://HOST:PORT of a dispatcher (python -m dfd.data_service "
                         f"dispatcher --port=PORT), got {service!r}")
    return service


def shared_job_name() -> str | None:
    """The job all trainers of one multi-worker run share (named from TF_CONFIG's cluster, which they
    have in common); None for a single trainer, which gets a job of its own."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) < 2:
        return None
    return "dfd-" + hashlib.sha256(json.dumps(cluster, sort_keys=True).encode()).hexdigest()[:16]


def distribute(dataset, service: str, *, batch_size: int, repeat: bool):
    """Runs `dataset` (batches, the last of an epoch partial) on the service; returns full batches."""
    import tensorflow as tf

    job_name = shared_job_name()

    served = dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
        service=check_address(service), job_name=job_name, compression=COMPRESSION))
    if repeat:
        # Each repetition is a new iteration of the job: one more pass over every file.
        served = served.repeat()
    # unbatch + batch re-forms full batches from the workers' partial epoch-end ones (a copy of the
    # decoded batch in this process: ~2 ms for 32 clips of 16x64x64, against ~90 ms to decode them).
    return served.unbatch().batch(batch_size, drop_remainder=True)


STALL_EXIT_CODE = 75   # EX_TEMPFAIL: re-running the command is the remedy


def stall_watchdog(service: str, timeout_s: float):
    """A Keras callback that ends the process with a clear error when a training step waits more than
    `timeout_s` for its batch from the tf.data service (see the module docstring for why)."""
    import keras

    class StallWatchdog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._armed_at = None
            self._stop = threading.Event()
            self._thread = None

        def on_train_begin(self, logs=None):
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="dfd-data-service-watchdog", daemon=True)
            self._thread.start()

        def on_train_batch_begin(self, batch, logs=None):
            self._armed_at = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            self._armed_at = None

        def on_train_end(self, logs=None):
            self._armed_at = None
            self._stop.set()

        def _watch(self):
            while not self._stop.wait(min(5.0, timeout_s / 4)):
                armed_at = self._armed_at
                if armed_at is not None and time.monotonic() - armed_at > timeout_s:
                    print(f"dfd.train: error: no training batch from the tf.data service at {service} for "
                          f"{timeout_s:.0f} s (--data_service_timeout_s). A service worker probably died holding "
                          "part of this epoch (tf.data service cannot finish such an epoch), or no worker is "
                          "running. Check the workers, then re-run the same command: it resumes from the last "
                          "completed epoch.", file=sys.stderr, flush=True)
                    os._exit(STALL_EXIT_CODE)   # the stuck step is inside TensorFlow: nothing else ends it

    return StallWatchdog()


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

def define_flags() -> None:
    flags.DEFINE_integer("port", 0, "Port to serve on (0: any free port; the log line says which).")
    flags.DEFINE_string("dispatcher", None, "worker: the dispatcher's HOST:PORT.")
    flags.DEFINE_string("worker_host", None, "worker: the host name trainers use to reach this worker "
                        "(default: this machine's host name).")
    flags.DEFINE_string("work_dir", None, "dispatcher: a folder for its journal, so a restarted dispatcher "
                        "resumes the running jobs (default: none, state is lost on restart).")
    flags.DEFINE_float("worker_timeout_s", DEFAULT_WORKER_TIMEOUT_S,
                       "dispatcher: drop a worker after this many seconds without a heartbeat.")


def start_dispatcher(port: int, work_dir: str | None = None, worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S):
    import tensorflow as tf
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir),
        worker_timeout_ms=int(worker_timeout_s * 1000))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int, worker_host: str | None = None):
    import tensorflow as tf
    dispatcher = dispatcher.removeprefix("grpc://")
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher, port=port,
        # Trainers connect to the address the worker registers: "localhost" (TF's default) would
        # send a trainer on another machine to itself.
        worker_address=f"{worker_host or socket.gethostname()}:%port%",
        heartbeat_interval_ms=1000)
    return tf.data.experimental.service.WorkerServer(config)


def _served(server) -> str:
    # What the server serves right now. These counters are TF's test hooks (private); a TF
    # without them only loses the counts in the log.
    parts = []
    for name in (("_num_workers", "workers"), ("_num_tasks", "tasks")):
        counter = getattr(server, name[0], None)
        if counter is not None:
            try:
                parts.append(f"{counter()} {name[1]}")
            except Exception:  # noqa: BLE001 - logging only
                pass
    return ", ".join(parts) or "running"


def _serve_until_stopped(server, role: str, address: str) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"dfd.data_service: {role} serving at {address} (stop with Ctrl-C or SIGTERM)", flush=True)
    last = None
    while not stop.wait(LOG_INTERVAL_S if last is not None else 0.5):
        now = _served(server)
        if now != last:
            print(f"dfd.data_service: {role} {time.strftime('%H:%M:%S')}: {now}", flush=True)
            last = now
    print(f"dfd.data_service: {role} stopping", flush=True)
    server.stop()


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in ("dispatcher", "worker"):
        raise ValueError("usage: python -m dfd.data_service dispatcher --port=P | "
                         "worker --dispatcher=HOST:P --port=Q")
    values = flags.FLAGS
    if argv[1] == "dispatcher":
        server = start_dispatcher(values.port, values.work_dir, values.worker_timeout_s)
        address = f"grpc://{socket.gethostname()}:{server.target.rsplit(':', 1)[1]}"
        _serve_until_stopped(server, "dispatcher", f"{address} (trainers: --data_service={address})")
        return
    if not values.dispatcher:
        raise ValueError("worker needs --dispatcher=HOST:PORT")
    server = start_worker(values.dispatcher, values.port, values.worker_host)
    _serve_until_stopped(server, "worker", f"{values.worker_host or socket.gethostname()}:"
                                           f"{server._address.rsplit(':', 1)[1] if values.port == 0 else values.port}"
                                           f" for dispatcher {values.dispatcher}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.stdout.reconfigure(line_buffering=True)
    define_flags()
    # Not quieted: a server's TensorFlow warnings and errors (lost workers, journal trouble) are its log.
    cli.run(main, "dfd.data_service", quiet=False)
