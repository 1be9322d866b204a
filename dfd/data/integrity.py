"""Is a converted dataset what metadata.json says? Checked before anything trains or evaluates on it.

    check_complete(meta)               cheap, every time: not an incomplete conversion
    check_split(meta, split)           cheap, every time: shard sizes, record counts
    find_corrupt_shards(meta, splits)  costly, only after a DataLossError: which shard failed its CRC

Why the cheap check: steps per epoch come from metadata.json's counts, so an edited or stale count
(4 -> 400) silently makes every epoch 100 passes over the same 4 clips, and a shard truncated by a
full disk or a bad copy is found only mid-training. Sizes come from one stat per shard; record
counts from TFRecord's framing (each record is an 8-byte length, a 4-byte CRC, the data and
another 4-byte CRC), read by seeking from length to length without reading the data: 12 bytes
per record. Measured: 0.22 s for 30,000 records of 3 kB (tf.data's full CRC-checked read of the
same file: 6.5 s); 0.2 ms for a 75 MiB shard of 50 clips. Bit flips inside a record keep both size and count;
only the CRCs catch them, which costs a full read, so that is left to the first read (training
itself) and `find_corrupt_shards` then names the shard.

Pure Python except find_corrupt_shards (TensorFlow, imported there).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

REPAIR = "re-run the same conversion command (it re-writes and re-verifies what does not match)"


class DatasetIntegrityError(ValueError):
    """A dataset that does not match its metadata.json; the message names the file and the repair."""


def count_records(path: str | Path) -> int:
    """Records in a TFRecord file from its framing alone; raises DatasetIntegrityError when truncated."""
    size = os.path.getsize(path)
    count = offset = 0
    with open(path, "rb") as handle:
        while offset < size:
            header = handle.read(12)
            if len(header) < 12:
                raise DatasetIntegrityError(f"{path} is truncated (a record header is cut off at byte {offset}): "
                                            f"{REPAIR}")
            (length,) = struct.unpack("<Q", header[:8])
            offset += 12 + length + 4
            if offset > size:
                raise DatasetIntegrityError(f"{path} is truncated (its last record needs {offset - size} more bytes):"
                                            f" {REPAIR}")
            handle.seek(offset)
            count += 1
    return count


def check_complete(meta) -> None:
    """Refuses a dataset whose conversion did not finish (metadata.json's "incomplete" says why)."""
    reason = meta.raw.get("incomplete")
    if reason:
        raise DatasetIntegrityError(
            f"{meta.directory} is an incomplete conversion: {reason}. Fix or remove the skipped files (see "
            f"{meta.directory / 'skipped.csv'}) or raise --max_skip_fraction, and re-run the conversion")


def check_split(meta, split: str) -> None:
    """Shard files of `split` against metadata.json: sizes, record counts, and the split's total."""
    info = meta.raw["splits"][split]
    listed = 0
    for shard in info["shards"]:
        path = meta.directory / shard["file"]
        if not path.is_file():
            continue   # DatasetMetadata.shard_paths reports missing shards
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise DatasetIntegrityError(f"{path} has {size} bytes, metadata.json says {shard['bytes']}: {REPAIR}")
        count = count_records(path)
        if count != shard["count"]:
            raise DatasetIntegrityError(f"{path} holds {count} records, metadata.json says {shard['count']}: {REPAIR}")
        listed += count
    class_counts = info.get("class_counts")
    class_total = sum(int(n) for n in class_counts.values()) if class_counts else listed
    if listed != int(info["count"]) or class_total != int(info["count"]):
        raise DatasetIntegrityError(
            f"{meta.directory / 'metadata.json'}: split '{split}' says {info['count']} examples "
            f"({info.get('class_counts')}), its shards hold {listed}: the file was edited or is stale; {REPAIR}")


def find_corrupt_shards(meta, splits) -> list[tuple[Path, str]]:
    """(path, TensorFlow's message) of every shard of `splits` that fails a full CRC-checked read."""
    import tensorflow as tf

    broken = []
    for split in splits:
        for shard in meta.raw.get("splits", {}).get(split, {}).get("shards", []):
            path = meta.directory / shard["file"]
            try:
                for _ in tf.data.TFRecordDataset(str(path), buffer_size=1 << 20):
                    pass
            except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
                broken.append((path, error.message.splitlines()[0]))
    return broken


def corrupt_data_error(meta, splits, error: Exception, broken=None) -> DatasetIntegrityError:
    """The error to raise in place of a DataLossError from reading `splits` of `meta`'s dataset.

    `broken`: find_corrupt_shards(meta, splits) when the caller has it already (each call reads every shard).
    """
    broken = find_corrupt_shards(meta, splits) if broken is None else broken
    if not broken:
        return DatasetIntegrityError(f"reading {meta.directory} failed ({error}); check it with a re-run of the "
                                     f"conversion: {REPAIR}")
    names = "; ".join(f"{path} ({message})" for path, message in broken)
    return DatasetIntegrityError(f"corrupt shard(s) in {meta.directory}: {names}. To repair, {REPAIR}")
