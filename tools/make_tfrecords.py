"""Converts an image or video dataset into verified, sharded TFRecords.

    python tools/make_tfrecords.py --source=DIR --output=DIR [--flags]

Layouts: <split>/<class>/<files> folders (train/val/valid/validation/test,
real/fake, any case), a CSV manifest (--manifest), DFDC (metadata.json) and
FaceForensics++ (original_sequences/ vs manipulated_sequences/). Writes
<split>-NNNNN-of-MMMMM.tfrecord shards, metadata.json and skipped.csv under
--output. Re-running the same command after an interruption finishes the job.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402  (TensorFlow-free: worker processes re-import this file)

from dfd import cli  # noqa: E402


def define_flags() -> None:
    flags.DEFINE_string("source", None, "Dataset folder: <split>/<class>/<files>, <class>/<files>, a DFDC folder "
                        "(metadata.json) or a FaceForensics++ root. Relative manifest paths are taken from here.")
    flags.DEFINE_string("output", "tfrecords/dataset", "Output folder for shards, metadata.json and skipped.csv.")
    flags.DEFINE_string("manifest", None, "CSV with columns path,label,split[,group]; label real/fake or 0/1; "
                        "an empty split is assigned by group.")
    flags.DEFINE_enum("source_type", "auto", ["auto", "folder", "manifest", "dfdc", "ffpp"],
                      "Source layout; auto detects it from --manifest and the folder's contents.")
    flags.DEFINE_string("ffpp_splits", None, "Folder with the official FaceForensics++ train.json, val.json and "
                        "test.json; without it FF++ is split by identity with --val_fraction/--test_fraction.")
    flags.DEFINE_string("ffpp_compression", "auto", "FaceForensics++ compression level to convert (c0, c23, c40: the "
                        "folder under each method), or 'all'. auto: the only level present; with several present "
                        "you must choose, since each level repeats every video.")
    flags.DEFINE_enum("kind", None, ["image", "video"], "Force the dataset kind; default: from file extensions.")
    flags.DEFINE_integer("frames", 16, "Video: frames sampled per clip.")
    flags.DEFINE_enum("sampling", "uniform", ["uniform", "contiguous"],
                      "Video: uniform = evenly spaced across the clip; contiguous = consecutive frames "
                      "from its middle.")
    flags.DEFINE_enum("short_clips", "pad", ["pad", "skip"],
                      "Video shorter than --frames: pad by repeating its last frame, or skip it.")
    flags.DEFINE_integer("frame_size", 64, "Video: frames are resized to frame_size x frame_size.")
    flags.DEFINE_integer("image_size", 256, "Image: resized to image_size x image_size; a source JPEG already "
                         "this size is stored byte-for-byte when --encoding=jpeg.")
    flags.DEFINE_enum("encoding", None, ["raw", "jpeg"],
                      "Frame storage. Default (measured, BENCHMARKS.md 'Conversion'): raw for video (16x64x64 "
                      "clips read 5.6x faster through tf.data than as JPEGs, for 5.2x the bytes) and jpeg for "
                      "images (a source JPEG of the target size is kept byte-for-byte, with the artifacts a "
                      "detector learns from).")
    flags.DEFINE_enum("face_crop", "none", ["none", "mtcnn"],
                      "none: keep the whole frame (many public sets are already face crops); mtcnn: detect faces "
                      "(MTCNN, CPU), follow the main face through the clip and store square crops of it, with the "
                      "boxes and detection confidences in each record.")
    flags.DEFINE_float("face_margin", 1.3, "Face crop: square side = face_margin x the larger side of the face box.")
    flags.DEFINE_integer("face_detect_size", 320, "Face crop: detect on a copy with this longest side (320 finds faces "
                         "down to about 6 percent of it; 640 costs about 4x, BENCHMARKS.md 'Face cropping').")
    flags.DEFINE_float("max_no_face_fraction", 0.5, "Face crop: skip a file (reason 'no face' in skipped.csv) when "
                       "more than this fraction of its frames has no face; the others take interpolated boxes.")
    flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality (1-100) when frames are re-encoded.")
    flags.DEFINE_integer("workers", 0, "Decoding processes; 0 = all cores, 1 = decode in this process "
                         "(--engine=local; Beam's runner options size --engine=beam).")
    flags.DEFINE_enum("engine", "local", ["local", "beam"],
                      "local: this machine's worker pool. beam: the same conversion as an Apache Beam pipeline "
                      "(pip install 'dfd[beam]'), on any runner named in --beam_options; --output must be a "
                      "filesystem every Beam worker can write (README: 'Beyond one machine').")
    flags.DEFINE_string("beam_options", "--runner=DirectRunner",
                        "With --engine=beam: Beam pipeline options, e.g. \"--runner=DirectRunner "
                        "--direct_num_workers=2 --direct_running_mode=multi_processing\" or \"--runner=FlinkRunner "
                        "--flink_master=HOST:8081 --environment_type=PROCESS ...\".")
    flags.DEFINE_float("shard_mb", 128.0, "Target shard size in MiB (from an estimated record size).")
    flags.DEFINE_integer("seed", 0, "Seed for group splits and the order of examples across shards.")
    flags.DEFINE_float("val_fraction", 0.1, "Fraction of files (by whole groups) for val where a source has no split.")
    flags.DEFINE_float("test_fraction", 0.1, "Fraction of files (by whole groups) for test where a source has no split.")
    flags.DEFINE_float("max_skip_fraction", 0.1, "Exit non-zero when more than this fraction of files is skipped.")
    flags.DEFINE_bool("overwrite", False, "Replace a different earlier conversion in --output.")
    flags.DEFINE_bool("progress", True, "Show a progress line on stderr.")


def main(argv) -> int:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    from dfd.convert.convert import ConvertConfig, TooManySkipsError, convert  # imports TF: not at module level

    values = flags.FLAGS
    config = ConvertConfig(
        output=values.output, source=values.source, manifest=values.manifest, source_type=values.source_type,
        ffpp_splits=values.ffpp_splits,
        ffpp_compression=values.ffpp_compression, kind=values.kind, num_frames=values.frames, frame_size=values.frame_size,
        image_size=values.image_size, encoding=values.encoding, jpeg_quality=values.jpeg_quality,
        sampling=values.sampling, short_clips=values.short_clips, face_crop=values.face_crop,
        face_margin=values.face_margin, face_detect_size=values.face_detect_size,
        max_no_face_fraction=values.max_no_face_fraction, workers=values.workers, shard_mb=values.shard_mb,
        seed=values.seed, val_fraction=values.val_fraction, test_fraction=values.test_fraction,
        max_skip_fraction=values.max_skip_fraction, overwrite=values.overwrite, progress=values.progress,
        engine=values.engine, beam_options=values.beam_options)
    try:
        summary = convert(config)
    except TooManySkipsError as error:   # a ValueError (cli.run reports it), after the counts
        print(error.summary.line(), flush=True)
        raise
    print(summary.line())
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, "make_tfrecords")
