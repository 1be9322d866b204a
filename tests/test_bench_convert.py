"""`python -m dfd.bench convert`: its decode-only limit runs the converter's own call minus the writing, in the
same kind of process, and each round's CPU time counts the worker processes. Structure only, no timed assertions."""

from dfd.bench import convert as bench_convert
from dfd.testing.synthetic import moving_clip, write_mp4


def test_both_sides_read_every_clip_in_the_same_worker_pool_and_only_one_writes(tmp_path):
    for index, label in enumerate(("real", "fake")):
        write_mp4(tmp_path / "source" / "train" / label / f"clip{index}.mp4", moving_clip(index, 12, 48, 64, noise=10))
    config = {"source": str(tmp_path / "source"), "num_frames": 4, "frame_size": 16, "encoding": "raw",
              "workers": 2, "progress": False, "shard_mb": 32.0}
    process = bench_convert.ConversionProcess()   # both sides take turns in this one process
    try:
        converted = process.run("convert", {**config, "output": str(tmp_path / "converted")})
        limit = process.run("decode-only", {**config, "output": str(tmp_path / "limit")})
        again = process.run("convert", {**config, "output": str(tmp_path / "again")})
    finally:
        process.close()
    assert process.process.returncode == 0
    assert converted["items"] == limit["items"] == again["items"] == 2
    for result in (converted, limit, again):
        # The two workers' CPU reaches the sample through the forkserver; the sample holds it and more.
        assert 0 < result["workers_cpu_s"] < result["cpu_s"] and result["wall_s"] > 0
    assert (tmp_path / "converted" / "metadata.json").exists() and list((tmp_path / "converted").glob("*.tfrecord"))
    assert not list((tmp_path / "limit").glob("*.tfrecord")) and not (tmp_path / "limit" / "metadata.json").exists()
    assert (tmp_path / "again" / "metadata.json").exists()   # the converter's own writing is back after the limit


def test_a_conversion_side_keeps_its_first_round_output_only(tmp_path):
    calls = []

    class FakeProcess:
        def run(self, side, config):
            calls.append((side, config["output"]))
            (tmp_path / config["output"]).mkdir()
            return {"items": 3, "wall_s": 1.5, "cpu_s": 2.0, "workers_cpu_s": 1.0}

    side = bench_convert.conversion_side("raw", FakeProcess(), "convert", tmp_path, {"encoding": "raw"},
                                         keep=tmp_path / "kept")
    assert [side.run(), side.run()] == [bench_convert._rounds.Sample(3, 1.5, 2.0)] * 2
    assert [output for _, output in calls] == [str(tmp_path / "convert-raw-0"), str(tmp_path / "convert-raw-1")]
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "convert-raw-0").exists()
    assert not (tmp_path / "convert-raw-1").exists()


def test_the_report_ends_with_p4_and_skips_memory_when_not_measured(capsys):
    from dfd import bench
    from dfd.bench._rounds import Sample, Side

    values = bench.parse(bench_convert.Settings, ["bench", "--clips=4", "--nomemory"])
    sides = [Side(name, lambda: None, [Sample(4, wall, cpu)] * 5)
             for name, wall, cpu in (("raw", 2.0, 0.4), ("limit", 1.0, 0.3), ("jpeg", 2.0, 0.5), ("seed", 1.0, 0.1))]
    sizes = {"raw": (800, 100.0), "jpeg": (200, 50.0), "npy": (800, None)}
    bench_convert._report(values, sides, 2, 4, sizes, None)
    out = capsys.readouterr().out
    assert "peak RSS" not in out
    assert f"{'npy':<10}{200:>12}{'-':>14}" in out   # bytes per clip, no tf.data read rate
    assert out.splitlines()[-1] == ("P4 make_tfrecords raw / decode-only limit by CPU time = 0.75 (rounds 0.75-0.75) "
                                    "(target >= 0.8); by wall time = 0.50 (rounds 0.50-0.50)")
