"""Dataset conversion: image and video files to verified, sharded TFRecords.

One stage per module:
  sources       find the files of a dataset (folder, CSV manifest, DFDC, FF++)
  splits        group-disjoint train/val/test splits where a source has none
  media         what a file is, judged from its first bytes
  video_reader  sample full-resolution RGB frames from a video in one pass
  image_reader  read any image as RGB uint8 (gray, RGBA, 16-bit)
  records       one file -> frames for a record -> serialized tf.train.Example
  worker        what a decoding process runs (TensorFlow-free)
  writer        sharded, atomic, resumable TFRecord writing
  verify        re-read every shard and check counts and CRCs
  convert       the orchestration behind tools/make_tfrecords.py
  synthetic     small moving-shape clips for tests and the benchmark

Modules that run in worker processes (media, video_reader, image_reader and the
reading half of records) never import TensorFlow: a spawned worker that imports
it pays seconds of start-up and hundreds of MB before decoding anything.
"""
