import tensorflow as tf

from dfd.data import schema
from dfd.data.metadata import DatasetMetadata
from dfd.testing.fake_shards import write_fake_dataset


def test_fake_dataset_matches_its_metadata(tmp_path):
    write_fake_dataset(tmp_path, counts={"train": (3, 5)}, encoding="jpeg")
    meta = DatasetMetadata.load(tmp_path)
    shape = meta.preprocessing.record_shape
    labels = []
    for path in meta.shard_paths("train"):
        for record in tf.data.TFRecordDataset(str(path)):
            labels.append(int(schema.parse_example_numpy(record.numpy(), shape)[schema.LABEL]))
    assert meta.count("train") == len(labels) == 8
    assert sorted(labels) == [0] * 3 + [1] * 5
