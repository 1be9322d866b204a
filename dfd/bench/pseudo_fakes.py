"""`python -m dfd.bench pseudo_fakes`: host CPU cost of self-blended pseudo-fakes (--pseudo_fakes=sbi).

The training pipeline (shuffle) on the same synthetic real clips, side by side in one run:
SBI off, SBI on a half of the real clips (the default --pseudo_fake_fraction), SBI on every clip.
Interleaved rounds and columns as in `bench pipeline` (dfd.bench._rounds): clips/s and CPU time
per clip (the work, little affected by other jobs on a shared machine), min / median / max.
The last line is the extra CPU per blended clip,
(CPU per clip with every clip blended − CPU per clip with SBI off).
"""

from __future__ import annotations

import dataclasses

from dfd import bench
from dfd.bench import _rounds
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    num_clips: int = setting(256, "Real clips written for the benchmark.")
    num_frames: int = setting(16, "Frames per clip (the seed's video model).")
    size: int = setting(64, "Frame size (the seed's 64x64).")
    batch_size: int = setting(32, "Batch size (the seed's).")
    passes: int = setting(2, "Timed passes per reader and round (after one warm-up pass).")
    rounds: int = setting(5, "Interleaved rounds (every reader once per round; at least 5).")


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    _rounds.check_rounds(values.rounds)
    from dfd.bench.pipeline import Reader
    from dfd.data import pipeline
    from dfd.data.pseudo_fakes import PseudoFakes
    from dfd.testing.fake_shards import write_fake_dataset

    print(_rounds.machine_line("before"), flush=True)
    with bench.work_folder(None, "pseudo-fakes") as root:
        records = write_fake_dataset(root, num_frames=values.num_frames, size=values.size,
                                     counts={"train": (values.num_clips, 0)}, shards_per_split=4)
        meta = pipeline.open_dataset(records)
        batch_size = values.batch_size
        steps = pipeline.steps_per_epoch(values.num_clips, batch_size, training=True)
        sides = []
        for name, pseudo_fakes in (("SBI off", PseudoFakes("none")),
                                   ("SBI, fraction 0.5", PseudoFakes("sbi", 0.5)),
                                   ("SBI, fraction 1.0 (every clip)", PseudoFakes("sbi", 1.0))):
            dataset, _, _ = pipeline.make_train_dataset(meta, batch_size=batch_size,
                                                        seed=0, repeat=True, pseudo_fakes=pseudo_fakes)
            sides.append(Reader(f"training pipeline, {name}", dataset, 4, values.passes, steps).side())
        _rounds.interleave(sides, values.rounds)
    print(_rounds.machine_line("after"))
    print(f"{values.num_clips} real clips of {values.num_frames}x{values.size}x{values.size}x3 "
          f"uint8 (raw), batch {batch_size}; {values.rounds} interleaved rounds of {values.passes} passes")
    for line in _rounds.table(sides, "clip", "us"):
        print(line)
    off, every = (_rounds.cpu_per_item(side).median for side in (sides[0], sides[2]))
    print(f"SBI host CPU per blended clip = {(every - off) * 1e6:.0f} us "
          f"({every / off:.1f}x the CPU of reading and decoding a clip)")
