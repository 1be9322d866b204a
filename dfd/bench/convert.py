"""Conversion benchmark: `python -m dfd.bench convert [--clips=240]`.

On a generated video set (moving shapes with sensor noise, mp4v through OpenCV) it measures, in
interleaved rounds (dfd.bench._rounds: (b) raw, (a), (b) jpeg, (c), then again, --rounds times):
  (b) make_tfrecords' conversion (dfd.convert.convert.convert, raw and jpeg) with all cores, in a
      process with TensorFlow loaded as the CLI has it: discovery, a new worker pool (and
      forkserver) per run, encoding, writing, verification
  (a) its decode-only limit: the same call in the same process, with the same worker processes,
      window and order of files, but every decoded clip dropped as it arrives: no encoding, no
      shard, no metadata, no verification (the stage under test)
  (c) the seed's approach: one process reads every frame and saves each clip as one .npy file
Each is timed over the conversion call alone (no interpreter or TensorFlow start-up), by wall and
by CPU time, the CPU of the worker processes included (reaped through the forkserver). Also: the
peak RSS of make_tfrecords (parent + workers, polled) on the set and on a set twice as large, bytes
per clip, and tf.data read clips/s (parse_batch + decode_frames) for raw and jpeg. The last line is
P4 = (b) raw ÷ (a), by CPU time (the headline) and by wall time, target >= 0.8.

`--engine=beam` measures instead the two engines of make_tfrecords side by side on the same set:
wall time of the whole command (interpreter, TF and pipeline start included) on a 4-clip set
and on the full set, for --engine=local and --engine=beam (--beam_options); the difference of
the two times gives each engine's clips/s, the 4-clip time its fixed start-up cost. Prints
beam/local clips/s on the last line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dfd import bench
from dfd.bench import _rounds
from dfd.convert.config import ENGINES
from dfd.settings import setting

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Settings:
    clips: int = setting(240, "Clips in the first set (the second has twice as many).")
    source_frames: int = setting(90, "Frames per generated clip.")
    source_height: int = setting(240, "Height of generated clips.")
    source_width: int = setting(320, "Width of generated clips.")
    frames: int = setting(16, "Frames sampled per clip.")
    frame_size: int = setting(64, "Frame size of the records.")
    workers: int = setting(0, "Decoding processes for (a) and (b); 0 = all cores.")
    rounds: int = setting(5, "Interleaved rounds of (b) raw, (a), (b) jpeg and (c) (at least 5).")
    memory: bool = setting(True, "Also measure make_tfrecords' peak RSS on the set and on the double set (two more "
                           "runs of the command).")
    work_dir: str | None = setting(None, "Where to put generated data (default: a temporary folder, removed).")
    engine: str = setting("local", "beam: compare make_tfrecords --engine=beam with --engine=local (see the module "
                          "docstring) instead of the full benchmark.", choices=ENGINES)
    beam_options: str = setting("--runner=DirectRunner --direct_num_workers=0 --direct_running_mode=multi_processing",
                                "With --engine=beam: the Beam options (0 workers: one per core).")


def _generate(root: Path, clips: int, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """Set A of `clips` clips, and set B = A plus a hard-linked copy of each clip under another name."""
    from dfd.testing.synthetic import moving_clip, write_mp4

    set_a, set_b = root / "set_a", root / "set_b"
    for index in range(clips):
        label = ("real", "fake")[index % 2]
        path = write_mp4(set_a / "train" / label / f"clip{index:05d}.mp4",
                         moving_clip(index, frames, height, width, noise=10))
        for copy in ("a", "b"):
            target = set_b / "train" / label / f"clip{index:05d}{copy}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return set_a, set_b


RESULT_PREFIX = "dfd.bench.convert result: "


class _StreamedOnly(Exception):
    """Ends the decode-only limit's conversion right after its stream, with the number of files read."""

    def __init__(self, count: int):
        super().__init__(f"{count} files read")
        self.count = count


def _read_only_write_shards(output, items, spec, todo, progress, config, on_send=None, on_shard=None):
    """The decode-only limit's stand-in for dfd.convert.convert._write_shards: the same stream (the
    same worker processes, window and order), every result dropped, so no encoding, no shard, no
    metadata and no verification, which are the stage under test."""
    from dfd.convert import convert as convert_lib

    workers = config.workers or os.cpu_count() or 1
    stream = convert_lib._stream(items, [p for plan in todo for p in plan.positions], spec, workers, on_send)
    try:
        count = sum(1 for _ in stream)
    finally:
        stream.close()
    raise _StreamedOnly(count)


def _children_cpu() -> float:
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


SIDES = ("convert", "decode-only")


def _one_conversion(side: str, config) -> dict:
    """One round of `side` in this process: "convert" (dfd.convert.convert.convert, what make_tfrecords
    runs) or "decode-only" (the same call with _read_only_write_shards). Files, wall and CPU seconds of
    the call, this process's CPU and its worker processes' (reaped through the forkserver) included."""
    import multiprocessing.forkserver

    from dfd.convert import convert as convert_lib

    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}: {SIDES}")
    convert_lib._write_shards = _read_only_write_shards if side == "decode-only" else _WRITE_SHARDS[0]
    wall, cpu, children = time.perf_counter(), _rounds.cpu_seconds(), _children_cpu()
    try:
        count = convert_lib.convert(config).processed
    except _StreamedOnly as done:
        count = done.count
    # The workers are children of the forkserver, which reaps them; waiting for the forkserver itself
    # adds their CPU time (and its own) to this process's RUSAGE_CHILDREN. The next round starts a new
    # one, as every make_tfrecords run does.
    multiprocessing.forkserver._forkserver._stop()
    return {"items": count, "wall_s": time.perf_counter() - wall, "cpu_s": _rounds.cpu_seconds() - cpu,
            "workers_cpu_s": _children_cpu() - children}


_WRITE_SHARDS: list = []   # the converter's own _write_shards, kept before any round replaces it


def serve_rounds() -> None:
    """Entry of the conversion process: TensorFlow and the converter loaded once, as make_tfrecords has them,
    then one round per JSON line {"side": ..., "config": ConvertConfig fields} read on stdin, each answered
    with one result line, until stdin closes. Both sides run in this one process, in turns."""
    import json

    import tensorflow  # noqa: F401  (loaded before any clock, as make_tfrecords has it)

    from dfd.convert import convert as convert_lib
    from dfd.convert.config import ConvertConfig

    _WRITE_SHARDS.append(convert_lib._write_shards)
    print(RESULT_PREFIX + "ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        result = _one_conversion(request["side"], ConvertConfig(**request["config"]))
        print(RESULT_PREFIX + json.dumps(result), flush=True)


class ConversionProcess:
    """The process that runs every conversion round (serve_rounds), started once."""

    def __init__(self):
        code = "from dfd.bench.convert import serve_rounds; serve_rounds()"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.errors = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen([sys.executable, "-c", code], text=True, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors)
        self._answer()

    def _answer(self) -> str:
        return _rounds.child_answer(self.process, self.errors, RESULT_PREFIX, "conversion")

    def run(self, side: str, config: dict) -> dict:
        import json

        self.process.stdin.write(json.dumps({"side": side, "config": config}) + "\n")
        self.process.stdin.flush()
        return json.loads(self._answer())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.errors.close()


def conversion_side(name: str, process, side: str, root: Path, config: dict,
                    keep: Path | None = None) -> _rounds.Side:
    """A Side running `side` on `config` in `process` (a ConversionProcess) once per round, each time into a
    new output folder, removed afterwards but for the first round's, kept as `keep` (for sizes and read rates)."""
    rounds = []

    def run() -> _rounds.Sample:
        output = root / f"{side}-{config['encoding']}-{len(rounds)}"
        result = process.run(side, {**config, "output": str(output)})
        rounds.append(result)
        if keep is not None and not keep.exists() and output.exists():
            os.replace(output, keep)
        shutil.rmtree(output, ignore_errors=True)
        return _rounds.Sample(result["items"], result["wall_s"], result["cpu_s"])

    return _rounds.Side(name, run)


def seed_npy(paths: list[str], output: Path, num_frames: int, size: int) -> int:
    """(c): the seed's way: one process, every frame read, each clip one .npy file. Returns the clips."""
    import cv2
    import numpy as np

    from dfd.preprocess.video_reader import plan_indices
    from dfd.testing.video_files import read_all_frames

    output.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(paths):
        frames = read_all_frames(path, rgb=False)   # BGR: only the chosen frames are converted, as before
        clip = np.stack([cv2.resize(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB), (size, size),
                                    interpolation=cv2.INTER_AREA)
                         for i in plan_indices(len(frames), num_frames, "uniform")])
        np.save(output / f"clip{index:05d}.npy", clip)
    return len(paths)


def convert_subprocess(source: Path, output: Path, encoding: str, values) -> dict:
    """(b): the CLI in a subprocess; clips/s from its summary, peak RSS of its process tree."""
    import psutil

    command = [sys.executable, str(ROOT / "tools" / "make_tfrecords.py"), f"--source={source}",
               f"--output={output}", f"--frames={values.frames}", f"--frame_size={values.frame_size}",
               f"--encoding={encoding}", f"--workers={values.workers}", "--noprogress", "--shard_mb=32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while process.poll() is None:
        try:
            tree = [process] + process.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"make_tfrecords failed:\n{stderr[-2000:]}")
    rate = float(re.search(r"([\d.]+) clips/s", stdout).group(1))
    size = sum(p.stat().st_size for p in output.glob("*.tfrecord"))
    return {"clips_per_s": rate, "peak_rss": peak, "bytes": size}


def timed_convert(source: Path, output: Path, engine: str, values) -> float:
    """Wall seconds of the whole make_tfrecords command (start-up included)."""
    command = [sys.executable, str(ROOT / "tools" / "make_tfrecords.py"), f"--source={source}",
               f"--output={output}", f"--frames={values.frames}", f"--frame_size={values.frame_size}",
               f"--workers={values.workers}", "--noprogress", "--shard_mb=32", f"--engine={engine}",
               f"--beam_options={values.beam_options}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"make_tfrecords --engine={engine} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def compare_engines(root: Path, values) -> None:
    """make_tfrecords --engine=beam against --engine=local: clips/s and fixed start-up cost."""
    small = root / "small"
    for path in sorted((root / "set_a").rglob("*.mp4"))[:4]:
        target = small / path.relative_to(root / "set_a")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    clips = len(list((root / "set_a").rglob("*.mp4")))
    results = {}
    for engine in ("local", "beam"):
        # Other processes share the machine: each measurement keeps the best of two runs.
        fixed = min(timed_convert(small, root / f"{engine}_small{i}", engine, values) for i in range(2))
        full = min(timed_convert(root / "set_a", root / f"{engine}_full{i}", engine, values) for i in range(2))
        rate = (clips - 4) / max(full - fixed, 1e-9)
        results[engine] = (fixed - 4 / rate, rate, full)
    print(f"\nmachine: {os.cpu_count()} CPU cores; {clips} clips -> {values.frames} x "
          f"{values.frame_size}x{values.frame_size}; beam options: {values.beam_options}")
    print(f"{'engine':<8}{'start-up s':>12}{'clips/s':>10}{f'{clips} clips, s':>16}")
    for engine, (fixed, rate, full) in results.items():
        print(f"{engine:<8}{fixed:>12.1f}{rate:>10.1f}{full:>16.1f}")
    print(f"beam/local clips/s = {results['beam'][1] / results['local'][1]:.2f}; "
          f"beam start-up {results['beam'][0] - results['local'][0]:+.1f} s")


def read_rate(directory: Path, repeats: int = 3) -> float:
    """tf.data clips/s through schema.parse_batch + decode_frames, as the trainer reads."""
    import tensorflow as tf

    from dfd.data import schema
    from dfd.data.metadata import DatasetMetadata

    meta = DatasetMetadata.load(directory)
    shape = meta.preprocessing.record_shape
    files = [str(p) for p in meta.shard_paths("train")]
    dataset = (tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(32)
               .map(lambda s: schema.decode_frames(schema.parse_batch(s, shape)[schema.FRAMES], shape),
                    num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    for _ in dataset:  # warm-up: graph tracing and file cache
        pass
    start, clips = time.perf_counter(), 0
    for _ in range(repeats):
        for batch in dataset:
            clips += int(batch.shape[0])
    return clips / (time.perf_counter() - start)


def _sides(values, process, root: Path, set_a: Path, workers: int) -> list[_rounds.Side]:
    """(b) raw, (a) its decode-only limit, (b) jpeg, (c) the seed's way, in the order they take turns."""
    paths = sorted(str(p) for p in set_a.rglob("*.mp4"))
    config = {"source": str(set_a), "num_frames": values.frames, "frame_size": values.frame_size, "encoding": "raw",
              "workers": workers, "progress": False, "shard_mb": 32.0}
    return [
        conversion_side("(b) make_tfrecords, raw", process, "convert", root, config, keep=root / "raw_a"),
        conversion_side("(a) decode-only limit (the same, no write)", process, "decode-only", root, config),
        conversion_side("(b) make_tfrecords, jpeg", process, "convert", root, {**config, "encoding": "jpeg"},
                        keep=root / "jpeg_a"),
        _rounds.Side("(c) seed: one .npy per clip, one process",
                     lambda: _rounds.timed(lambda: seed_npy(paths, root / "npy", values.frames, values.frame_size))),
    ]


def _report(values, sides, workers: int, clips: int, sizes: dict, rss: tuple[int, int] | None) -> None:
    print(f"\n{clips} clips -> {values.frames} x {values.frame_size}x{values.frame_size}; workers={workers}; "
          f"{values.rounds} interleaved rounds (the conversions in one process, each with a new worker pool; "
          "wall and CPU time of the conversion call, worker processes included)")
    for line in _rounds.table(sides, "clip", "ms", width=44):
        print(line)
    print(f"\n{'encoding':<10}{'bytes/clip':>12}{'read clips/s':>14}")
    for encoding, (size, read) in sizes.items():
        print(f"{encoding:<10}{size / clips:>12.0f}{'-' if read is None else f'{read:.0f}':>14}")
    if rss:
        mib = 2**20
        print(f"\npeak RSS of (b) raw, parent + workers: {clips} clips {rss[0] / mib:.0f} MiB, "
              f"{2 * clips} clips {rss[1] / mib:.0f} MiB ({rss[1] / rss[0] - 1:+.1%}; target <= +10%)")
    raw, limit, _, seed = sides
    print(_rounds.ratio_line("make_tfrecords raw / the seed's .npy per clip", raw, seed))
    print(_rounds.ratio_line("P4 make_tfrecords raw / decode-only limit", raw, limit, ">= 0.8"))


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    if values.engine != "beam":
        _rounds.check_rounds(values.rounds)
    workers = values.workers or os.cpu_count() or 1
    print(_rounds.machine_line("before"), flush=True)
    with tempfile.TemporaryDirectory(dir=values.work_dir) as temporary:
        root = Path(temporary)
        started = time.perf_counter()
        set_a, set_b = _generate(root, values.clips, values.source_frames, values.source_height,
                                 values.source_width)
        print(f"generated {values.clips} clips of {values.source_frames} frames "
              f"{values.source_width}x{values.source_height} in {time.perf_counter() - started:.0f} s", flush=True)
        if values.engine == "beam":
            compare_engines(root, values)
            return
        process = ConversionProcess()
        try:
            sides = _rounds.interleave(_sides(values, process, root, set_a, workers), values.rounds,
                                       progress=lambda line: print(line, flush=True))
        finally:
            process.close()
        # Peak memory, polled from outside (the rounds' own runs are left unobserved).
        rss = tuple(convert_subprocess(source, root / f"rss_{name}", "raw", values)["peak_rss"]
                    for name, source in (("a", set_a), ("b", set_b))) if values.memory else None
        npy_bytes = sum(p.stat().st_size for p in (root / "npy").glob("*.npy"))
        sizes = {encoding: (sum(p.stat().st_size for p in (root / f"{encoding}_a").glob("*.tfrecord")),
                            read_rate(root / f"{encoding}_a")) for encoding in ("raw", "jpeg")}
        sizes["npy"] = (npy_bytes, None)
    print(_rounds.machine_line("after"))
    _report(values, sides, workers, values.clips, sizes, rss)
