"""Interleaved rounds and their spread: the one timing machinery of the benchmarks that compare sides.

Why interleave: on a shared machine other jobs come and go within seconds. Timing side A and then
side B gives them different machines, and a ratio of the two measures the machine as much as the
code. Here the sides take turns, A B A B ..., for `rounds` rounds (at least MIN_ROUNDS), so load
falls on both alike, and each side's rounds give a min / median / max instead of one number.

Why CPU time: other jobs on the same cores stretch wall time (our threads wait for a core) but
hardly change the CPU time the work itself takes. So every sample carries both, and a ratio is
printed by CPU time (the headline, the one that holds under load) beside wall time. CPU time is
that of this process and of its children that have ended and been waited for
(resource.getrusage RUSAGE_SELF + RUSAGE_CHILDREN), all threads: a side whose work runs in worker
processes counts them once they are reaped (or measures itself and returns a Sample).

    sides = [Side("measured", lambda: timed(run_measured)), Side("limit", lambda: timed(run_limit))]
    interleave(sides, rounds=5)
    print("\\n".join(table(sides, "clip")))
    print(ratio_line("P1 measured / limit", sides[0], sides[1], target=">= 0.9"))   # CPU ratio first

No TensorFlow here: dfd.bench imports this before it decides whether TensorFlow is needed.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Callable, Sequence

MIN_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class Sample:
    """One side's measurement in one round: `items` (clips, steps, batches) in `wall_s` seconds,
    using `cpu_s` CPU seconds."""

    items: int
    wall_s: float
    cpu_s: float

    def __add__(self, other: "Sample") -> "Sample":
        return Sample(self.items + other.items, self.wall_s + other.wall_s, self.cpu_s + other.cpu_s)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its waited-for children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[[], int]) -> Sample:
    """Runs `work` (which returns how many items it did) and measures its wall and CPU time."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    items = work()
    return Sample(int(items), time.perf_counter() - wall, cpu_seconds() - cpu)


@dataclasses.dataclass
class Side:
    """One thing measured: `run` does one round's work (untimed set-up and warm-up included, as it
    needs) and returns the Sample of its timed part. `samples` fills up, one per round."""

    name: str
    run: Callable[[], Sample]
    samples: list[Sample] = dataclasses.field(default_factory=list)


def check_rounds(rounds: int) -> None:
    if rounds < MIN_ROUNDS:
        raise ValueError(f"--rounds={rounds}: at least {MIN_ROUNDS} interleaved rounds are needed for a spread "
                         "worth printing")


def interleave(sides: Sequence[Side], rounds: int, progress: Callable[[str], None] | None = None) -> Sequence[Side]:
    """Each round runs every side once, in the given order (A B A B ...); returns `sides`, samples filled."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for round_index in range(rounds):
        for side in sides:
            sample = side.run()
            if sample.items <= 0 or sample.wall_s <= 0:
                raise RuntimeError(f"{side.name}: round {round_index + 1} measured nothing ({sample})")
            side.samples.append(sample)
        if progress is not None:
            # Each round's numbers as it ends: on a starved machine a run stopped early still says something.
            progress(f"round {round_index + 1}/{rounds}: " + "; ".join(
                f"{side.name} {side.samples[-1].items / side.samples[-1].wall_s:,.1f}/s, CPU "
                f"{side.samples[-1].cpu_s / side.samples[-1].items * 1e3:.3f} ms each" for side in sides))
    return sides


@dataclasses.dataclass(frozen=True)
class Spread:
    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        if not values:
            raise ValueError("no values: interleave() has not run")
        return cls(min(values), statistics.median(values), max(values))

    def scaled(self, factor: float) -> "Spread":
        return Spread(self.low * factor, self.median * factor, self.high * factor)

    def format(self, digits: int = 1) -> str:
        return f"{self.low:,.{digits}f} / {self.median:,.{digits}f} / {self.high:,.{digits}f}"


def rate(side: Side) -> Spread:
    """Items per wall second, over the rounds."""
    return Spread.of([sample.items / sample.wall_s for sample in side.samples])


def cpu_per_item(side: Side) -> Spread:
    """CPU seconds per item, over the rounds."""
    return Spread.of([sample.cpu_s / sample.items for sample in side.samples])


def wall_per_item(side: Side) -> Spread:
    return Spread.of([sample.wall_s / sample.items for sample in side.samples])


def cores(side: Side) -> float:
    """Median CPU seconds per wall second: how many cores the side kept busy."""
    return statistics.median(sample.cpu_s / sample.wall_s for sample in side.samples)


def ratios(measured: Side, limit: Side) -> tuple[Spread, Spread]:
    """(by CPU time, by wall time) of measured ÷ limit as throughputs, one ratio per round (the two
    sides of a round ran back to back, under about the same load), as spreads over the rounds.

    By CPU time: the limit's CPU per item ÷ the measured side's (> 1 when the measured side does
    less work per item). By wall time: the measured side's items/s ÷ the limit's.
    """
    pairs = list(zip(measured.samples, limit.samples, strict=True))
    by_cpu = [(lim.cpu_s / lim.items) / (mes.cpu_s / mes.items) for mes, lim in pairs]
    by_wall = [(mes.items / mes.wall_s) / (lim.items / lim.wall_s) for mes, lim in pairs]
    return Spread.of(by_cpu), Spread.of(by_wall)


def ratio_line(label: str, measured: Side, limit: Side, target: str = "") -> str:
    """`label` by CPU time (median of the per-round ratios, their min-max), then by wall time."""
    by_cpu, by_wall = ratios(measured, limit)
    target_text = f" (target {target})" if target else ""
    return (f"{label} by CPU time = {by_cpu.median:.2f} (rounds {by_cpu.low:.2f}-{by_cpu.high:.2f}){target_text}; "
            f"by wall time = {by_wall.median:.2f} (rounds {by_wall.low:.2f}-{by_wall.high:.2f})")


TIME_UNITS = {"us": 1e6, "ms": 1e3, "s": 1.0}


def table(sides: Sequence[Side], unit: str, time_unit: str = "ms", width: int = 48) -> list[str]:
    """One row per side: items/s and CPU and wall time per item, each min / median / max, and cores."""
    scale, digits = TIME_UNITS[time_unit], 3 if time_unit == "ms" else 1
    header = (f"{'':<{width}} {'rounds':>6} {unit + 's/s (min / median / max)':>30} "
              f"{'CPU ' + time_unit + '/' + unit + ' (min / median / max)':>34} "
              f"{'wall ' + time_unit + '/' + unit:>30} {'cores':>6}")
    lines = [header]
    for side in sides:
        lines.append(f"{side.name:<{width}} {len(side.samples):>6} {rate(side).format(1):>30} "
                     f"{cpu_per_item(side).scaled(scale).format(digits):>34} "
                     f"{wall_per_item(side).scaled(scale).format(digits):>30} {cores(side):>6.2f}")
    return lines


def machine_line(when: str) -> str:
    """The machine and its load right now, for the record (the load averages say how shared it is)."""
    one, five, fifteen = os.getloadavg()
    return (f"{when}: {os.cpu_count()} CPU cores, load average {one:.2f} {five:.2f} {fifteen:.2f} "
            f"(1, 5, 15 min), nice {os.nice(0)}")


def child_answer(process, errors, prefix: str, what: str, error=RuntimeError) -> str:
    """The text after `prefix` on the next such line a benchmark's child process prints; `error` with the end
    of its stderr (`errors`, a file) when it exits first. Used by the benches that keep a child between rounds."""
    for line in process.stdout:
        if line.startswith(prefix):
            return line[len(prefix):]
    process.wait()
    errors.seek(0)
    raise error(f"the {what} process failed (exit code {process.returncode}):\n{errors.read()[-2000:]}")
