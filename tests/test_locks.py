"""The folder lock: a second holder is refused with a clear message, a finished or killed one frees it."""

import subprocess
import sys
import textwrap

import pytest

from dfd.locks import LOCK_FILE, FolderLockedError, folder_lock


def test_second_holder_refused_while_first_holds(tmp_path):
    with folder_lock(tmp_path, "conversion"):
        with pytest.raises(FolderLockedError, match=r"in use by process \d+.*another conversion"):
            with folder_lock(tmp_path, "conversion"):
                pass
    # Released at the end of the block: taking it again works.
    with folder_lock(tmp_path, "conversion"):
        assert (tmp_path / LOCK_FILE).is_file()


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    # A process that takes the lock and dies with SIGKILL: the kernel drops the flock.
    script = textwrap.dedent(f"""
        import os, signal
        from dfd.locks import folder_lock
        with folder_lock({str(tmp_path)!r}, "training"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), timeout=60,
                            env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert result.returncode == -9
    with folder_lock(tmp_path, "training"):
        pass
