"""The one way dfd writes a file that others read: write beside it, flush, rename.

A kill (or a full disk) mid-write then leaves the old file or none, never a truncated one: a
resumed conversion, a re-run training or a user's evaluate reads either the previous complete
version or nothing. Every JSON file dfd writes (metadata.json, summary.json, history.json,
threshold.json, calibration.json, progress notes) goes through `write_json`.

No write ever goes through a symbolic link. dfd creates none, so a link where dfd writes was put
there by someone else: writing through `.progress.json -> ~/.bashrc` would overwrite a file outside
the folder, and renaming over it would silently delete the user's link. Both are refused
(`refuse_link`, a ValueError naming the link). The temporary file is created anew (O_EXCL, which
never follows a link) after removing any leftover of that name: a killed run's partial file, or a
planted link, which unlink removes without touching its target.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def refuse_link(path: str | Path) -> None:
    """A ValueError when `path` is a symbolic link (dangling or not): dfd neither writes through one nor
    replaces it."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}): dfd does not write through links "
                         "or replace them. Remove the link (or choose another folder) and run again.")


def fresh_temporary(path: str | Path) -> Path:
    """The temporary name beside `path` (refused when `path` is a link), with any leftover of it removed,
    so that creating it writes a new file of dfd's own."""
    path = Path(path)
    refuse_link(path)
    temporary = path.with_name(path.name + TMP_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    return temporary


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    temporary = fresh_temporary(path)
    # O_EXCL: a new file or an error, never an existing file or a link's target (one made since the unlink).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_text(path: str | Path, text: str, errors: str | None = None) -> None:
    """`errors="surrogateescape"` writes a file name that is not UTF-8 as its own bytes (predict's CSV)."""
    write_bytes(path, text.encode("utf-8", errors or "strict"))


def write_json(path: str | Path, value, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent) + "\n")
