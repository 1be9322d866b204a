"""The conversion's options: tools/make_tfrecords.py's flags are generated from ConvertConfig (dfd.settings).

The preprocessing options (sampling, face crop, JPEG quality...) are declared once, on
dfd.data.preprocessing.PreprocessSpec, and taken from there (`like`); the converter builds the spec
from them (dfd.convert.convert.build_spec).
"""

from __future__ import annotations

import dataclasses

from dfd.convert.sources import SOURCE_TYPES
from dfd.data.preprocessing import PreprocessSpec
from dfd.preprocess.video_reader import MAX_FRAME_PIXELS
from dfd.settings import like, setting

ENGINES = ("local", "beam")


@dataclasses.dataclass
class ConvertConfig:
    output: str = setting("tfrecords/dataset", "Output folder for shards, metadata.json and skipped.csv.")
    source: str | None = setting(
        None, "Dataset folder: <split>/<class>/<files>, <class>/<files>, a DFDC folder (metadata.json) or a "
        "FaceForensics++ root. Relative manifest paths are taken from here.")
    manifest: str | None = setting(
        None, "CSV with columns path,label,split[,group]; label real/fake or 0/1; an empty split is assigned by "
        "group.")
    source_type: str = setting("auto", "Source layout; auto detects it from --manifest and the folder's contents.",
                               choices=SOURCE_TYPES)
    ffpp_splits: str | None = setting(
        None, "Folder with the official FaceForensics++ train.json, val.json and test.json; without it FF++ is "
        "split by identity with --val_fraction/--test_fraction.")
    ffpp_compression: str = setting(   # c0/c23/c40/all; auto: the only level present
        "auto", "FaceForensics++ compression level to convert (c0, c23, c40: the folder under each method), or "
        "'all'. auto: the only level present; with several present you must choose, since each level repeats "
        "every video.")
    kind: str | None = like(PreprocessSpec, "kind", default=None)   # None: from the files
    num_frames: int = setting(16, "Video: frames sampled per clip.", flag="frames")
    frame_size: int = setting(64, "Video: frames are resized to frame_size x frame_size.")
    image_size: int = setting(256, "Image: resized to image_size x image_size; a source JPEG already this size is "
                              "stored byte-for-byte when --encoding=jpeg.")
    encoding: str | None = like(PreprocessSpec, "encoding", default=None)   # None: DEFAULT_ENCODING[kind]
    jpeg_quality: int = like(PreprocessSpec, "jpeg_quality")
    sampling: str = like(PreprocessSpec, "sampling")
    short_clips: str = like(PreprocessSpec, "short_clips")
    face_crop: str = like(PreprocessSpec, "face_crop")   # dfd.preprocess.faces
    face_margin: float = like(PreprocessSpec, "face_margin")
    face_detect_size: int = like(PreprocessSpec, "face_detect_size")
    max_no_face_fraction: float = like(PreprocessSpec, "max_no_face_fraction")
    max_frame_pixels: int = setting(   # a reading limit, not preprocessing: not in the stored PreprocessSpec
        MAX_FRAME_PIXELS, "Videos whose frames have more pixels (width x height, from the stream's header) are "
        "skipped before decoding; the default, 4096x2304, holds 4K upright or portrait.")
    workers: int = setting(0, "Decoding processes; 0 = all cores, 1 = decode in this process (--engine=local; "
                           "Beam's runner options size --engine=beam).")
    engine: str = setting(   # local: dfd.convert.pool; beam: dfd.convert.beam_engine
        "local", "local: this machine's worker pool. beam: the same conversion as an Apache Beam pipeline "
        "(pip install 'dfd[beam]'), on any runner named in --beam_options; --output must be a "
        "filesystem every Beam worker can write (README: 'Beyond one machine').", choices=ENGINES)
    beam_options: str = setting(
        "--runner=DirectRunner", "With --engine=beam: Beam pipeline options, e.g. \"--runner=DirectRunner "
        "--direct_num_workers=2 --direct_running_mode=multi_processing\" or \"--runner=FlinkRunner "
        "--flink_master=HOST:8081 --environment_type=PROCESS ...\".")
    shard_mb: float = setting(128.0, "Target shard size in MiB (from an estimated record size).")
    seed: int = setting(0, "Seed for group splits and the order of examples across shards.")
    val_fraction: float = setting(0.1, "Fraction of files (by whole groups) for val where a source has no split.")
    test_fraction: float = setting(0.1, "Fraction of files (by whole groups) for test where a source has no split.")
    max_skip_fraction: float = setting(0.1, "Exit non-zero when more than this fraction of files is skipped.")
    overwrite: bool = setting(False, "Replace a different earlier conversion in --output.")
    progress: bool = setting(True, "Show a progress line on stderr.")
