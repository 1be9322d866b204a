"""What a `.keras` file may unpack to, checked from its zip directory before Keras opens it.

A .keras file is a zip archive: config.json and metadata.json (read whole into memory and parsed),
model.weights.h5 and any assets (unpacked to a temporary folder). Keras 3.15 refuses only members
over 4 GiB (in memory) or 256 MiB (on disk) that expand over 100 times: an 8 MB file whose
config.json is 1.5 GB of whitespace took predict to a 3.8 GB peak, and 8 asset members of 200 MB
wrote 1.5 GB to the temporary folder. The sizes are in the zip's central directory, so they are
checked before any member is read; Python's zipfile never yields more than a member declares.

The limits are far above what real models need and far below what hurts a machine:
- the JSON members at most MAX_JSON_BYTES each (64 MiB; config.json of EfficientNet-B4, dfd's largest
  backbone, is about 0.2 MB);
- all members together at most MAX_EXPANSION times the archive's size plus EXPANSION_ALLOWANCE. Keras
  stores members uncompressed (1:1); a copy re-zipped with deflate shrinks float weights by ~10%,
  and even weights mostly of zeros stay well under 10:1, where a bomb is 1000:1.
"""

from __future__ import annotations

import os
import zipfile

JSON_MEMBERS = ("config.json", "metadata.json")
MAX_JSON_BYTES = 64 * 2**20
MAX_EXPANSION = 10
EXPANSION_ALLOWANCE = 64 * 2**20


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def check_archive(path: str | os.PathLike) -> None:
    """Raises ValueError naming the member when the .keras file at `path` is not a zip archive or would
    unpack to more than a model can need (see the module docstring)."""
    refusal = "; this is no model dfd will load (a damaged or hostile file): re-save or retrain the model"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        # Keras reports any unreadable file as "File not found"; say what a .keras file is.
        raise ValueError(f"{path} is not a Keras model file (a .keras file is a zip archive; this one is "
                         f"damaged or something else: {error}). Re-save or retrain the model") from None
    for member in members:
        if member.filename in JSON_MEMBERS and member.file_size > MAX_JSON_BYTES:
            raise ValueError(f"{path}: its {member.filename} would unpack to {_megabytes(member.file_size)}, over "
                             f"the {_megabytes(MAX_JSON_BYTES)} a model's {member.filename} can need{refusal}")
    total, archive_size = sum(member.file_size for member in members), os.path.getsize(path)
    allowed = MAX_EXPANSION * archive_size + EXPANSION_ALLOWANCE
    if total > allowed:
        largest = max(members, key=lambda member: member.file_size)
        raise ValueError(f"{path} would unpack to {_megabytes(total)} from {_megabytes(archive_size)} on disk, over "
                         f"the {_megabytes(allowed)} allowed ({MAX_EXPANSION}x plus "
                         f"{_megabytes(EXPANSION_ALLOWANCE)}); its largest member is {largest.filename} "
                         f"({_megabytes(largest.file_size)}){refusal}")
