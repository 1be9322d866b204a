"""Re-reads every shard of a converted dataset and checks it against metadata.json.

TFRecordDataset checks each record's CRC while reading, so truncation and bit
rot surface as DataLossError; counts and class counts are compared with what
metadata.json promises. A failure names the file.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from dfd.data import schema
from dfd.data.metadata import DatasetMetadata


class VerificationError(ValueError):
    """A shard that does not match metadata.json; the message names the file."""


def count_shard(path: Path) -> tuple[int, dict[str, int]]:
    """(records, {label name: records}) of one shard; raises VerificationError on a corrupt file."""
    labels = {"label": tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset(str(path)).batch(512).map(lambda s: tf.io.parse_example(s, labels)["label"])
    counts = [0, 0]
    try:
        for batch in dataset:
            for label, n in zip(*[t.numpy() for t in tf.unique_with_counts(batch)[::2]], strict=True):
                counts[int(label)] += int(n)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise VerificationError(f"{path} is corrupt ({error.message.splitlines()[0]}): "
                                "delete it and re-run the same conversion command") from error
    return sum(counts), dict(zip(schema.LABEL_NAMES, counts, strict=True))


def verify_dataset(directory: str | Path) -> dict[str, int]:
    """Checks every shard of every split; returns {split: examples}."""
    metadata = DatasetMetadata.load(directory)
    totals = {}
    for split in metadata.splits:
        info = metadata.raw["splits"][split]
        class_totals = {name: 0 for name in schema.LABEL_NAMES}
        total = 0
        for shard in info["shards"]:
            path = Path(directory) / shard["file"]
            if not path.is_file():
                raise VerificationError(f"{path} is listed in metadata.json but missing")
            if path.stat().st_size != shard["bytes"]:
                raise VerificationError(f"{path} has {path.stat().st_size} bytes, metadata.json says {shard['bytes']}")
            count, classes = count_shard(path)
            if count != shard["count"]:
                raise VerificationError(f"{path} holds {count} records, metadata.json says {shard['count']}")
            total += count
            for name, n in classes.items():
                class_totals[name] += n
        if total != info["count"] or class_totals != info["class_counts"]:
            raise VerificationError(f"split '{split}' holds {total} records {class_totals}, metadata.json says "
                                    f"{info['count']} {info['class_counts']}")
        totals[split] = total
    return totals
