"""Dataset conversion: image and video files to verified, sharded TFRecords.

One stage per module:
  sources       find the files of a dataset (folder, CSV manifest, DFDC, FF++)
  splits        group-disjoint train/val/test splits where a source has none
  worker        what a decoding process runs (TensorFlow-free)
  pool          decoding processes that survive a dead worker
  writer        sharded, atomic, resumable TFRecord writing
  verify        re-read every shard and check counts and CRCs
  convert       the orchestration behind tools/make_tfrecords.py
  beam_engine   the same shard writing as an Apache Beam pipeline (--engine=beam)

What turns one file into one record (media probing, frame readers, face crops, record building) is
dfd.preprocess, which dfd.predict and dfd.serve use too. Worker processes import only that
TensorFlow-free half: a spawned worker that imports TensorFlow pays seconds of start-up and hundreds
of MB before decoding anything.
"""
