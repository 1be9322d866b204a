"""`python -m dfd.bench pseudo_fakes`: host CPU cost of self-blended pseudo-fakes (--pseudo_fakes=sbi).

The training pipeline (shuffle, flip) on the same synthetic real clips, side by side in one run:
SBI off, SBI on a half of the real clips (the default --pseudo_fake_fraction), SBI on every clip.
Columns as in `bench pipeline`: clips/s, CPU time of the process per clip (the work, little
affected by other jobs on a shared machine). The last line is the extra CPU per blended clip,
(CPU per clip with every clip blended − CPU per clip with SBI off).
"""

from __future__ import annotations

import dataclasses
import os

from dfd import bench
from dfd.settings import setting


@dataclasses.dataclass(frozen=True)
class Settings:
    num_clips: int = setting(256, "Real clips written for the benchmark.")
    num_frames: int = setting(16, "Frames per clip (the seed's video model).")
    size: int = setting(64, "Frame size (the seed's 64x64).")
    batch_size: int = setting(32, "Batch size (the seed's).")
    passes: int = setting(3, "Timed passes per reader and round (after one warm-up pass; 2 rounds).")


def main(argv) -> None:
    values = bench.parse(Settings, argv)
    from dfd.bench.pipeline import _Reader, measure
    from dfd.data import pipeline
    from dfd.data.pseudo_fakes import PseudoFakes
    from dfd.testing.fake_shards import write_fake_dataset

    with bench.work_folder(None, "pseudo-fakes") as root:
        records = write_fake_dataset(root, num_frames=values.num_frames, size=values.size,
                                     counts={"train": (values.num_clips, 0)}, shards_per_split=4)
        meta = pipeline.open_dataset(records)
        batch_size = values.batch_size
        steps = pipeline.steps_per_epoch(values.num_clips, batch_size, training=True)
        readers = []
        for name, pseudo_fakes in (("SBI off", PseudoFakes("none")),
                                   ("SBI, fraction 0.5", PseudoFakes("sbi", 0.5)),
                                   ("SBI, fraction 1.0 (every clip)", PseudoFakes("sbi", 1.0))):
            dataset, _, _ = pipeline.make_train_dataset(meta, batch_size=batch_size,
                                                        seed=0, repeat=True, pseudo_fakes=pseudo_fakes)
            readers.append(_Reader(f"training pipeline, {name}", dataset, 4, steps))
        results = measure(readers, values.passes)

    print(f"{values.num_clips} real clips of {values.num_frames}x{values.size}x{values.size}x3 "
          f"uint8 (raw), batch {batch_size}, {os.cpu_count()} CPU cores, median of 2 rounds x "
          f"{values.passes} passes")
    print(f"{'reader':<48} {'clips/s':>10} {'CPU us/clip':>12}")
    for reader, (speed, cpu, _) in zip(readers, results, strict=True):
        print(f"{reader.name:<48} {speed:>10.1f} {cpu * 1e6:>12.0f}")
    off, every = results[0][1], results[2][1]
    print(f"SBI host CPU per blended clip = {(every - off) * 1e6:.0f} us "
          f"({every / off:.1f}x the CPU of reading, decoding and flipping a clip)")
