"""The server's private upload folder, and the folders of servers that were killed before removing theirs.

A server keeps each upload in `<tmp>/dfd-serve-<pid>-<pid namespace>-<random>/` only while it is scored
(OpenCV reads videos from files) and removes the folder when it stops. A server killed with SIGKILL (or
by the OOM killer) cannot, so every start removes the folders of dead servers first. The owner's pid is in the
folder's name, not in a file written afterwards: the name is there the moment the folder is, so a
server that is starting at the same moment never has its new folder taken for a stale one.

A folder is removed only when all of these hold: its name is dfd's (`dfd-serve-<pid>-<namespace>-...`),
it is a real directory (a link is never followed nor removed), it belongs to this user, it was made in
this process's pid namespace (containers sharing a /tmp each number their processes from 1: another's
live server would look dead), and no live process has its pid (a zombie is not one). A pid reused by
another process keeps the folder until that process ends: the safe side. No TensorFlow here.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

PREFIX = "dfd-serve-"
_OWN_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-(\d+)-[A-Za-z0-9_]+")


def pid_namespace() -> str:
    """This process's pid namespace (the inode of /proc/self/ns/pid); "0" where there is no such file."""
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def create_folder() -> Path:
    """A new private folder (mode 0700: only this user reads the uploads) named after this process."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{pid_namespace()}-"))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie (killed, not yet reaped by its parent) does not: in a container
    whose first process reaps nothing, a server killed with SIGKILL stays one for good."""
    if pid <= 0:
        return True   # not a server's pid (0 would signal our own group): never a reason to delete
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]   # after "(command name)"
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def remove_stale_folders(root: str | Path | None = None, uid: int | None = None) -> list[Path]:
    """Removes the upload folders of dead servers under `root` (the temporary folder); returns them."""
    root = Path(root if root is not None else tempfile.gettempdir())
    uid = os.getuid() if uid is None else uid
    namespace = pid_namespace()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        owner = _OWN_NAME.fullmatch(entry.name)
        if owner is None or owner.group(2) != namespace:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or pid_alive(int(owner.group(1))):
            continue
        # rmtree works on file descriptors here (Linux): links inside are removed, never followed.
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed
