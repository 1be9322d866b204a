"""One writer per folder: an advisory lock that a second dfd process reports instead of mixing files.

    with folder_lock(output_dir, "conversion"):
        ...   # only this process writes into output_dir

The lock is `fcntl.flock` on `<folder>/.dfd.lock`, which holds the owner's pid, host and command
line. flock (not the file's existence) is what locks: the kernel releases it when the process
ends, however it ends, so a killed run never leaves a stale lock behind, and a re-run resumes at
once. A second process gets `FolderLockedError` (a ValueError, so entry points report it as one
clear line) naming the process that holds the folder.

The lock file is opened without following links (O_NOFOLLOW) and must be a plain file of its own: a
`.dfd.lock` that is a symbolic or hard link to a file elsewhere would otherwise have that file truncated
and the owner's JSON written into it. Such a lock file is refused with a ValueError naming it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
from pathlib import Path

LOCK_FILE = ".dfd.lock"


class FolderLockedError(ValueError):
    """Another process holds the folder's lock."""


def _holder(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"process {owner.get('pid', '?')} on {owner.get('host', '?')} "
            f"({owner.get('command', '?')})")


def _open_lock_file(path: Path):
    """`path` opened for reading and writing, created if absent; never a link's target."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.EISDIR):
            raise
        what = f"a symbolic link (to {os.readlink(path)})" if path.is_symlink() else "a folder"
        raise ValueError(f"{path} is {what}, where dfd keeps its lock file: remove it and run again "
                         "(dfd never writes through a link)") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
        os.close(descriptor)
        what = "a hard link to another name" if stat.S_ISREG(status.st_mode) else "not a plain file"
        raise ValueError(f"{path} is {what}, where dfd keeps its lock file: remove it and run again "
                         "(dfd writes only into a lock file of its own)")
    return os.fdopen(descriptor, "r+")


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str):
    """Holds `folder`'s lock for the duration of the block; `what` names the job in the error."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = _open_lock_file(path)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{folder} is in use by {_holder(path)}: another {what} is writing there. Wait for it to "
                f"finish (or stop it), or choose another folder.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(sys.argv)[:300]}))
        handle.flush()
        yield path
    finally:
        handle.close()   # closing the descriptor releases the flock
