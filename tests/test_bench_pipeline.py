"""The page-cache tools of `python -m dfd.bench pipeline` (its cold case rests on them) and its readers' rounds."""

import os
from pathlib import Path

import pytest

from dfd.bench.pipeline import _disk_read_bytes, evict_from_page_cache, resident_fraction


def _filesystem_type(path: Path) -> str:
    """The type of the mount holding `path`, from /proc/mounts (longest matching mount point)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fs_type, *_ = line.split()
        if str(path).startswith(mount_point) and len(mount_point) > len(best):
            best, kind = mount_point, fs_type
    return kind


def test_evicted_file_leaves_the_page_cache_and_is_read_from_disk(tmp_path):
    path = tmp_path / "clip.bin"
    path.write_bytes(os.urandom(1 << 20))
    path.read_bytes()
    assert resident_fraction([str(path)]) == 1.0
    evict_from_page_cache([str(path)])
    if _filesystem_type(tmp_path) == "tmpfs":
        # tmpfs pages live only in memory: the advice cannot drop them.
        assert resident_fraction([str(path)]) == 1.0
        return
    assert resident_fraction([str(path)]) == 0.0
    before = _disk_read_bytes()
    path.read_bytes()
    assert _disk_read_bytes() - before >= 1 << 20   # the whole file came from the disk
    assert resident_fraction([str(path)]) == 1.0


def test_reader_round_times_its_passes_after_one_warm_up_pass():
    import numpy as np

    from dfd.bench.pipeline import Reader

    batches = [(np.zeros((4, 2, 2, 2, 3), np.uint8), np.zeros(4, np.int32))] * 3

    class Counting:
        passes = 0

        def __iter__(self):
            Counting.passes += 1
            return iter(batches)

    reader = Reader("list", Counting(), files=1, passes=2)
    sample = reader.run_round()
    assert Counting.passes == 3 and sample.items == 2 * 3 * 4   # the warm-up pass is not in the sample
    assert len(reader.disk_bytes_per_clip) == 1

    def endless():
        while True:
            yield from batches

    stepped = Reader("steps", endless(), files=1, passes=3, steps=2)
    assert stepped.run_round().items == 3 * 2 * 4


def test_reader_refuses_batches_that_are_not_uint8():
    import numpy as np

    from dfd.bench.pipeline import Reader

    reader = Reader("floats", [(np.zeros((2, 3), np.float32), None)], files=1, passes=1)
    with pytest.raises(RuntimeError, match="expected uint8 batches"):
        reader.run_round()
