"""The one way dfd writes a file that others read: write beside it, flush, rename.

A kill (or a full disk) mid-write then leaves the old file or none, never a truncated one: a
resumed conversion, a re-run training or a user's evaluate reads either the previous complete
version or nothing. Every JSON file dfd writes (metadata.json, summary.json, history.json,
threshold.json, calibration.json, progress notes) goes through `write_json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TMP_SUFFIX = ".tmp"


def write_text(path: str | Path, text: str, errors: str | None = None) -> None:
    """`errors="surrogateescape"` writes a file name that is not UTF-8 as its own bytes (predict's CSV)."""
    path = Path(path)
    temporary = path.with_name(path.name + TMP_SUFFIX)
    with open(temporary, "w", errors=errors) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_json(path: str | Path, value, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent) + "\n")
