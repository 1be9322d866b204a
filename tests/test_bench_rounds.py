"""dfd.bench._rounds, the interleaved rounds and statistics every comparing benchmark prints. Structure only:
which side runs when, and that the printed numbers are computed right from the samples; no timed assertions."""

import subprocess
import sys

import pytest

from dfd.bench import _rounds
from dfd.bench._rounds import Sample, Side, Spread


def _recording_side(name: str, log: list, samples: list[Sample]) -> Side:
    pending = iter(samples)

    def run():
        log.append(name)
        return next(pending)

    return Side(name, run)


def test_interleave_runs_every_side_once_per_round_in_turn():
    log = []
    sides = [_recording_side(name, log, [Sample(10, 1.0, 0.5)] * 6) for name in "ABC"]
    progress = []
    assert _rounds.interleave(sides, rounds=6, progress=progress.append) is sides
    assert log == list("ABC") * 6
    assert [len(side.samples) for side in sides] == [6, 6, 6]
    assert len(progress) == 6
    assert progress[-1] == "round 6/6: " + "; ".join(f"{name} 10.0/s, CPU 50.000 ms each" for name in "ABC")


def test_a_round_that_measured_nothing_stops_the_benchmark():
    sides = [_recording_side("empty", [], [Sample(0, 1.0, 1.0)])]
    with pytest.raises(RuntimeError, match="empty: round 1 measured nothing"):
        _rounds.interleave(sides, rounds=1)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        _rounds.interleave(sides, rounds=0)


def test_fewer_than_five_rounds_is_refused_with_what_to_do():
    _rounds.check_rounds(5)
    with pytest.raises(ValueError, match="--rounds=4: at least 5 interleaved rounds"):
        _rounds.check_rounds(4)


def _side(name: str, samples: list[Sample]) -> Side:
    return Side(name, lambda: None, list(samples))


def test_spreads_are_min_median_max_of_the_per_round_values():
    side = _side("A", [Sample(100, 2.0, 1.0), Sample(100, 1.0, 4.0), Sample(50, 1.0, 0.5), Sample(200, 4.0, 2.0)])
    assert _rounds.rate(side) == Spread(50.0, 50.0, 100.0)   # 50, 100, 50, 50 items/s
    assert _rounds.cpu_per_item(side) == Spread(0.01, 0.01, 0.04)   # 0.01, 0.04, 0.01, 0.01
    assert _rounds.wall_per_item(side) == Spread(0.01, 0.02, 0.02)   # 0.02, 0.01, 0.02, 0.02
    assert _rounds.cores(side) == pytest.approx(0.5)   # 0.5, 4, 0.5, 0.5
    assert Spread.of([3.0, 1.0, 2.0]).format(1) == "1.0 / 2.0 / 3.0"
    assert Spread(1, 2, 3).scaled(1e3) == Spread(1e3, 2e3, 3e3)
    with pytest.raises(ValueError, match="no values"):
        Spread.of([])


def test_ratios_pair_the_sides_round_by_round():
    measured = _side("measured", [Sample(100, 1.0, 1.0), Sample(100, 2.0, 1.0), Sample(100, 1.0, 2.0)])
    limit = _side("limit", [Sample(100, 0.5, 0.8), Sample(200, 2.0, 1.5), Sample(100, 2.0, 1.0)])
    by_cpu, by_wall = _rounds.ratios(measured, limit)
    # CPU: limit's CPU per item / measured's, per round: 0.8, 0.75, 0.5.
    assert by_cpu == Spread(pytest.approx(0.5), pytest.approx(0.75), pytest.approx(0.8))
    # Wall: measured's items/s / limit's, per round: 100/200, 50/100, 100/50.
    assert by_wall == Spread(pytest.approx(0.5), pytest.approx(0.5), pytest.approx(2.0))
    line = _rounds.ratio_line("P9 measured / limit", measured, limit, ">= 0.9")
    assert line == ("P9 measured / limit by CPU time = 0.75 (rounds 0.50-0.80) (target >= 0.9); "
                    "by wall time = 0.50 (rounds 0.50-2.00)")
    with pytest.raises(ValueError):   # sides of different round counts cannot be paired
        _rounds.ratios(measured, _side("short", limit.samples[:2]))


def test_table_prints_each_side_with_its_rounds_and_spreads():
    side = _side("reader", [Sample(1000, 0.5, 0.25), Sample(1000, 0.25, 0.5), Sample(1000, 1.0, 0.1)])
    header, row = _rounds.table([side], "clip", "us")
    assert "clips/s (min / median / max)" in header and "CPU us/clip" in header
    assert row.split()[:2] == ["reader", "3"]
    assert "1,000.0 / 2,000.0 / 4,000.0" in row   # clips/s
    assert "100.0 / 250.0 / 500.0" in row   # CPU us per clip
    assert "250.0 / 500.0 / 1,000.0" in row   # wall us per clip
    assert row.split()[-1] == "0.50"   # cores: 0.5, 2.0, 0.1


def test_timed_counts_the_cpu_time_of_waited_for_child_processes():
    code = ("import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
            "print(time.process_time())")

    def work():
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        work.child_cpu = float(done.stdout)
        return 7

    sample = _rounds.timed(work)
    assert sample.items == 7
    assert sample.cpu_s >= work.child_cpu >= 0.3   # the child's own CPU is in the sample
    assert sample.wall_s >= work.child_cpu * 0.5


def test_machine_line_names_cores_and_load():
    line = _rounds.machine_line("before")
    assert line.startswith("before: ") and "CPU cores, load average" in line and "(1, 5, 15 min)" in line
