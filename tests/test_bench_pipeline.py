"""The page-cache tools of `python -m dfd.bench pipeline` (its cold case rests on them)."""

import os
from pathlib import Path

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
