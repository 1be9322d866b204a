"""Can this process write where a command will write? Asked before the work, not after it.

    check_writable(path, flag)   raises ValueError naming the flag and the folder when it is not writable

A read-only --run_dir or --output used to end in a PermissionError traceback: for dfd.evaluate
after minutes of scoring, for dfd.train once the first epoch was done. The check creates a
nameless temporary file in the folder that would hold `path` (itself when it exists, else its
nearest existing ancestor, where the folder would be made): the file system answers, so it is
right for ACLs, root squash on NFS and read-only mounts, where permission bits alone are not.
The file never appears under a name (O_TMPFILE on Linux) and is gone when closed.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

# The errors of a folder this process may not write to: no permission, or a read-only file system.
NOT_WRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def existing_folder(path: str | Path) -> Path:
    """`path` when it is a folder, else the nearest existing folder above it (where it would be created)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path(path.anchor)


def not_writable_message(folder: str | Path, error: OSError, flag: str | None = None) -> str:
    """`[flag=path: ]FOLDER is not writable (reason): what to do` (one line)."""
    reason = "read-only file system" if error.errno == errno.EROFS else (error.strerror or str(error))
    named = f"{flag}: " if flag else ""
    return (f"{named}the folder {folder} is not writable ({reason}); give a folder this user can write to, "
            "or change its permissions")


def check_writable(path: str | Path, flag: str) -> None:
    """Raises ValueError when the folder `path` is (or would be created in) cannot be written by this process."""
    folder = existing_folder(path)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        if error.errno in NOT_WRITABLE_ERRNOS:
            raise ValueError(not_writable_message(folder, error, f"{flag}={path}")) from None
        raise
