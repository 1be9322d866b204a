"""Hostile files cost bounded memory and time (issue 20 §4): decompression bombs refused from their headers.

Every case is a real file made here: small images whose headers are patched to claim 15000 x 15000
(decoding them would take GBs; the refusal happens before any pixel is decoded), a real H.264 video
whose frames are over a lowered --max_frame_pixels, FIFOs among ordinary files, and .keras archives
whose members would unpack to far more than a model needs.
"""

import csv
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfd import keras_archive
from dfd.convert import convert as convert_lib
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import loading, predict
from dfd.preprocess import image_headers, image_reader, media, records, video_reader
from dfd.testing.runs import untrained_image_run
from dfd.testing.synthetic import moving_clip, write_mp4

ROOT = Path(__file__).resolve().parents[1]
HUGE = 15_000   # 225 Mpx: 675 MB as RGB, 2.0 GB peak decoding the 8.6 KB WebP
IMAGE = PreprocessSpec(kind="image", num_frames=1, size=16, encoding="jpeg")


def encoded(extension: str, params=()) -> bytes:
    ok, data = cv2.imencode(extension, moving_clip(3, 1, 24, 40)[0], list(params))
    assert ok
    return data.tobytes()


def _put(data: bytes, offset: int, value: int, length: int, order: str = "little") -> bytes:
    return data[:offset] + value.to_bytes(length, order) + data[offset + length:]


def _tiff_entry_offsets(data: bytes) -> dict[int, tuple[int, int]]:
    """tag -> (offset of its value, value length) in a little-endian TIFF's first directory."""
    directory = int.from_bytes(data[4:8], "little")
    found = {}
    for entry in range(int.from_bytes(data[directory:directory + 2], "little")):
        start = directory + 2 + 12 * entry
        tag, kind = int.from_bytes(data[start:start + 2], "little"), int.from_bytes(data[start + 2:start + 4], "little")
        found[tag] = (start + 8, 2 if kind == 3 else 4)
    return found


def claim_huge(data: bytes) -> bytes:
    """`data` (an image cv2 wrote) with its header saying HUGE x HUGE; the pixel data is left as it was."""
    if data.startswith(b"\xff\xd8"):
        offset = next(i for marker, i in image_headers.jpeg_segments(data) if marker == 0xC0)
        return _put(_put(data, offset + 5, HUGE, 2, "big"), offset + 7, HUGE, 2, "big")
    if data.startswith(b"\x89PNG"):
        return _put(_put(data, 16, HUGE, 4, "big"), 20, HUGE, 4, "big")
    if data[12:16] == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return _put(data, 21, (bits & ~0xFFFFFFF) | (HUGE - 1) << 14 | (HUGE - 1), 4)
    if data[12:16] == b"VP8 ":
        return _put(_put(data, 26, HUGE, 2), 28, HUGE, 2)
    if data[12:16] == b"VP8X":
        return _put(_put(data, 24, HUGE - 1, 3), 27, HUGE - 1, 3)
    if data.startswith(b"II*\x00"):
        for tag in (256, 257):
            offset, length = _tiff_entry_offsets(data)[tag]
            data = _put(data, offset, HUGE, length)
        return data
    if data.startswith(b"BM"):
        return _put(_put(data, 18, HUGE, 4), 22, HUGE, 4)
    raise AssertionError("no patcher for this format")


def webp_extended(lossless: bool) -> bytes:
    """A WebP with a VP8X header (EXIF makes Pillow write one)."""
    import io

    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 1
    buffer = io.BytesIO()
    Image.fromarray(moving_clip(3, 1, 24, 40)[0]).save(buffer, "WEBP", exif=exif.tobytes(), lossless=lossless)
    return buffer.getvalue()


FORMATS = {
    "jpeg": lambda: encoded(".jpg"),
    "png": lambda: encoded(".png"),
    "webp_lossless": lambda: encoded(".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
    "webp_lossy": lambda: encoded(".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
    "webp_extended": lambda: webp_extended(lossless=True),
    "tiff": lambda: encoded(".tiff"),
    "bmp": lambda: encoded(".bmp"),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_image_format_is_sized_from_its_header_and_a_huge_claim_is_refused(tmp_path, name):
    data = FORMATS[name]()
    assert media.sniff(data[:16]) == "image"   # a format dfd reads...
    assert image_headers.image_size(data) == (24, 40)   # ...has a header parser that reads it right
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (24, 40)
    bomb = claim_huge(data)
    assert image_headers.image_size(bomb) == (HUGE, HUGE)
    # A TIFF named .jpg (the case) is judged by its bytes, like every other.
    path = tmp_path / ("bomb.jpg" if name == "tiff" else f"bomb.{name}")
    path.write_bytes(bomb)
    result = records.try_read_content(str(path), IMAGE)
    assert isinstance(result, records.SkippedFile)
    assert result.reason.startswith(f"image is {HUGE}x{HUGE}, larger than the 100,000,000-pixel limit")


def test_a_sparse_file_claiming_a_gigabyte_is_not_read_into_memory(tmp_path):
    path = tmp_path / "sparse.png"
    with open(path, "wb") as handle:
        handle.write(encoded(".png"))
        handle.truncate(2**30)   # 1 GiB that occupies a few KB on disk
    result = records.try_read_content(str(path), IMAGE)
    assert result.reason == "file is 1,024 MB, larger than any image of 100,000,000 pixels (763 MB)"


def test_a_tiff_tile_larger_than_its_image_counts_as_its_size():
    # OpenCV's TIFF decoder allocates whole tiles (up to 1 GiB), however small the image.
    data = encoded(".tiff")
    directory = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[directory:directory + 2], "little")
    tiles = b"".join(tag.to_bytes(2, "little") + (4).to_bytes(2, "little") + (1).to_bytes(4, "little")
                     + HUGE.to_bytes(4, "little") for tag in (322, 323))
    entries = data[directory + 2:directory + 2 + 12 * count] + tiles
    tiled = data[:directory] + (count + 2).to_bytes(2, "little") + entries + b"\x00" * 4
    assert image_headers.image_size(tiled) == (HUGE, HUGE)


def test_an_image_whose_size_the_header_does_not_give_is_refused_not_decoded(tmp_path):
    # OpenCV decodes PPM (and GIF, HDR, AVIF, ...): without a size from the header, nothing is decoded blind.
    ok, ppm = cv2.imencode(".ppm", moving_clip(3, 1, 24, 40)[0])
    (tmp_path / "image.ppm").write_bytes(ppm.tobytes())
    with pytest.raises(image_reader.ImageReadError, match="cannot read the image's size from its header"):
        image_reader.read_image_and_bytes(str(tmp_path / "image.ppm"))
    # A PNG cut inside its IHDR chunk, and a JPEG with junk where its frame header should be.
    (tmp_path / "cut.png").write_bytes(encoded(".png")[:20])
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x04AB" + b"\x00junk" * 20)
    for name in ("cut.png", "junk.jpg"):
        result = records.try_read_content(str(tmp_path / name), IMAGE)
        assert result.reason.startswith("cannot read the image's size from its header"), name


# ---------------------------------------------------------------------------------------------
# Videos: frames over --max_frame_pixels are refused from the stream's header
# ---------------------------------------------------------------------------------------------

def write_h264(path: Path, width: int, height: int, frames: int = 8) -> Path:
    """A real H.264 mp4 of a test pattern, encoded by imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=s={width}x{height}:r={frames}:d=1", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-threads", "1", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def large_video(tmp_path_factory):
    """2000 x 2000, 8 frames (115 KB): over a lowered limit of 1,000,000 pixels, and cheap to read in full."""
    return write_h264(tmp_path_factory.mktemp("large") / "large.mp4", 2000, 2000)


def test_the_default_frame_limit_holds_4k_either_way_up():
    assert video_reader.MAX_FRAME_PIXELS >= 4096 * 2160   # DCI 4K; UHD and portrait 2160 x 3840 too
    assert convert_lib.ConvertConfig().max_frame_pixels == video_reader.MAX_FRAME_PIXELS


def _growth_mb(path: Path, limit: int) -> tuple[str, float]:
    """(outcome, growth of the peak RSS in MB) of reading `path` in a fresh process. The peak is VmHWM:
    ru_maxrss carries over from the parent (pytest, with TensorFlow loaded) across exec."""
    code = ("import re; from dfd.preprocess import video_reader\n"
            "def peak(): return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "base = peak()\n"
            "try:\n"
            f"    video_reader.sample_video_frames({str(path)!r}, 8, max_frame_pixels={limit}); print('read')\n"
            "except ValueError as error:\n"
            "    print(error)\n"
            "print((peak() - base) / 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    outcome, growth = done.stdout.strip().splitlines()
    return outcome, float(growth)


def test_frames_over_the_limit_are_refused_before_decoding_the_clip(large_video):
    refused, refused_mb = _growth_mb(large_video, 1_000_000)
    assert refused == ("frames are 2000x2000 (4,000,000 pixels), more than the --max_frame_pixels=1000000 limit; "
                       "raise the flag to read it")
    read, read_mb = _growth_mb(large_video, 4_000_000)
    assert read == "read"
    # Reading keeps 8 full frames (8 x 12 MB, measured +160 MB); the refusal costs FFmpeg's stream probe
    # (measured +23 MB; +160 MB against 1.75 GB at 8000 x 8000).
    assert refused_mb < read_mb / 3, (refused_mb, read_mb)


def test_the_frame_limit_reaches_conversion_and_predict(tmp_path, large_video, image_run):
    source = tmp_path / "src"
    for split, label, seed in (("train", "real", 0), ("train", "fake", 1), ("val", "real", 2), ("val", "fake", 3)):
        write_mp4(source / split / label / f"small{seed}.mp4", moving_clip(seed, 6, 24, 32))
    shutil.copy(large_video, source / "train" / "fake" / "large.mp4")
    config = convert_lib.ConvertConfig(output=str(tmp_path / "out"), source=str(source), num_frames=4, frame_size=16,
                                       progress=False, workers=1, max_skip_fraction=1.0, max_frame_pixels=1_000_000)
    summary = convert_lib.convert(config)
    assert summary.counts == {"train": 2, "val": 2} and summary.skipped == 1
    [(path, reason)] = skipped_rows(tmp_path / "out")
    assert path.endswith("large.mp4") and reason.startswith("frames are 2000x2000 (4,000,000 pixels)")
    with pytest.raises(ValueError, match="--max_frame_pixels must be >= 1"):
        convert_lib.convert(convert_lib.ConvertConfig(output=str(tmp_path / "out2"), source=str(source),
                                                      max_frame_pixels=0, progress=False, workers=1))

    loaded = loading.load(image_run.root)
    small = str(source / "val" / "real" / "small2.mp4")
    results = predict.predict_files(loaded, [str(large_video), small], video_frames=3, progress=None,
                                    max_frame_pixels=1_000_000)
    assert results[0].error.startswith("frames are 2000x2000") and results[1].error is None
    # dfd.serve's batcher passes its --max_frame_pixels the same way.
    from dfd.serve.batcher import Batcher
    batcher = Batcher(loaded, window_s=0.0, video_frames=3, max_frame_pixels=1_000_000, explain_crops=False)
    try:
        result, _, _ = batcher.submit(str(large_video), with_crops=False).result(timeout=120)
    finally:
        batcher.close()
    assert result.error.startswith("frames are 2000x2000")


# ---------------------------------------------------------------------------------------------
# Only regular files are read
# ---------------------------------------------------------------------------------------------

def skipped_rows(output) -> list[list[str]]:
    with open(Path(output) / "skipped.csv", newline="") as handle:
        return list(csv.reader(handle))[1:]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny untrained image model saved as a run."""
    return untrained_image_run(tmp_path_factory.mktemp("image_run") / "run", IMAGE)


def _without_hanging(function, fifos: list[Path]):
    """function() in a thread; if it is still blocked on a FIFO after 60 s, a writer is opened on each
    so the test fails instead of hanging for ever."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(value=function()), daemon=True)
    thread.start()
    thread.join(timeout=60)
    blocked = thread.is_alive()
    if blocked:
        for fifo in fifos:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=30)
    assert not blocked, "reading a FIFO blocked"
    return outcome["value"]


def test_predict_scores_the_other_files_when_one_named_is_a_fifo(tmp_path, image_run):
    fifo = tmp_path / "p.mp4"
    os.mkfifo(fifo)
    cv2.imwrite(str(tmp_path / "ok.png"), moving_clip(1, 1, 16, 16)[0])
    loaded = loading.load(image_run.root)
    paths = [str(fifo), str(tmp_path / "ok.png"), "/dev/zero"]
    results = _without_hanging(lambda: predict.predict_files(loaded, paths, progress=None), [fifo])
    assert results[0].error == "not a regular file (a named pipe (FIFO)); only regular files are read"
    assert results[1].error is None and 0 <= results[1].fake_probability <= 1
    assert results[2].error == "not a regular file (a character device); only regular files are read"


def test_a_fifo_in_a_conversion_source_is_a_skipped_row_saying_so(tmp_path):
    source = tmp_path / "src"
    for split, label, seed in (("train", "real", 0), ("train", "fake", 1), ("val", "real", 2), ("val", "fake", 3)):
        (source / split / label).mkdir(parents=True)
        cv2.imwrite(str(source / split / label / f"face{seed}.png"), moving_clip(seed, 1, 20, 20)[0])
    os.mkfifo(source / "train" / "fake" / "pipe.png")
    config = convert_lib.ConvertConfig(output=str(tmp_path / "out"), source=str(source), image_size=16,
                                       progress=False, workers=1, max_skip_fraction=1.0)
    summary = _without_hanging(lambda: convert_lib.convert(config), [source / "train" / "fake" / "pipe.png"])
    assert summary.counts == {"train": 2, "val": 2} and summary.skipped == 1
    assert skipped_rows(tmp_path / "out") == [
        ["train/fake/pipe.png", "not a regular file (a named pipe (FIFO)); only regular files are read"]]


# ---------------------------------------------------------------------------------------------
# .keras archives are sized from their zip directory before Keras opens them
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_members(image_run) -> dict[str, bytes]:
    with zipfile.ZipFile(image_run.best_model) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_a_saved_model_passes_and_loads(tmp_path, image_run, model_members):
    keras_archive.check_archive(image_run.best_model)
    # Deflated (re-zipped) rather than stored as Keras writes it: still well inside the limits.
    model = loading.load_keras_model(rezip(tmp_path / "deflated.keras", model_members))
    assert model.output_shape == (None, 1)


def test_a_config_json_of_whitespace_is_refused_naming_it(tmp_path, model_members):
    # A genuine archive: 65 MiB of whitespace after the JSON (valid JSON, which Keras would parse whole).
    padded = {**model_members, "config.json": model_members["config.json"] + b" " * (65 * 2**20)}
    path = rezip(tmp_path / "padded.keras", padded)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match=r"its config\.json would unpack to 65\.0 MB, over the 64\.0 MB"):
        loading.load_keras_model(path)


def claim_member_size(path: Path, name: str, size: int) -> None:
    """Rewrites the uncompressed size the zip's central directory gives for member `name`."""
    data = bytearray(path.read_bytes())
    end_record = data.rindex(b"PK\x05\x06")
    entry = int.from_bytes(data[end_record + 16:end_record + 20], "little")
    while data[entry:entry + 4] == b"PK\x01\x02":
        name_length, extra, comment = (int.from_bytes(data[entry + at:entry + at + 2], "little") for at in (28, 30, 32))
        if data[entry + 46:entry + 46 + name_length] == name.encode():
            data[entry + 24:entry + 28] = size.to_bytes(4, "little")
        entry += 46 + name_length + extra + comment
    path.write_bytes(bytes(data))


def test_a_claimed_size_in_the_zip_directory_is_refused_before_anything_is_read(tmp_path, model_members):
    # The 1.5 GB config.json, as the central directory of a 20 KB archive claims it.
    path = rezip(tmp_path / "claims.keras", model_members)
    claim_member_size(path, "config.json", 1500 * 2**20)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("config.json").file_size == 1500 * 2**20
    with pytest.raises(ValueError, match=r"its config\.json would unpack to 1,500\.0 MB"):
        loading.load_keras_model(path)


def test_assets_unpacking_to_far_more_than_the_archive_are_refused_naming_the_largest(tmp_path, model_members):
    # 8 asset members of 9 MiB of zeros each: 72 MiB from a ~100 KB archive (the issue had 8 x 200 MB).
    assets = {f"assets/blob{index}.bin": bytes(9 * 2**20) for index in range(8)}
    path = rezip(tmp_path / "assets.keras", {**model_members, **assets})
    with pytest.raises(ValueError, match=r"would unpack to 72\.\d MB from 0\.\d MB on disk.*"
                                         r"largest member is assets/blob0\.bin \(9\.0 MB\)"):
        loading.load_keras_model(path)
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="is not a Keras model file"):
        loading.load_keras_model(tmp_path / "text.keras")


def test_the_frame_cnn_of_a_cnn_lstm_is_checked_too(tmp_path, model_members):
    from dfd.models import cnn_lstm
    path = rezip(tmp_path / "frames.keras", {**model_members,
                                             "config.json": model_members["config.json"] + b" " * (65 * 2**20)})
    with pytest.raises(ValueError, match=r"config\.json would unpack to 65\.0 MB"):
        cnn_lstm.load_frame_features(str(path), (16, 16, 3))

