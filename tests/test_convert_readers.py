"""Frame readers and make_record on real files: round trips and every bad input."""

import subprocess

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from dfd.data import schema
from dfd.data.preprocessing import PreprocessSpec
from dfd.preprocess import image_reader, records, video_reader
from dfd.testing.synthetic import moving_clip, write_mp4
from dfd.testing.video_files import read_all_frames

VIDEO = PreprocessSpec(kind="video", num_frames=6, size=16, encoding="raw")


def direct_frames(path, indices, size):
    """Reference: every frame with read(), then the chosen ones, RGB, resized."""
    frames = read_all_frames(path)
    return np.stack([cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA) for i in indices]), len(frames)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_mp4(tmp_path_factory.mktemp("v") / "clip.mp4", moving_clip(1, 20, 48, 64))


def test_plan_indices():
    assert video_reader.plan_indices(20, 4, "uniform") == [2, 7, 12, 17]
    assert video_reader.plan_indices(20, 4, "contiguous") == [8, 9, 10, 11]
    assert video_reader.plan_indices(3, 5, "uniform") == [0, 1, 2, 2, 2]
    assert video_reader.plan_indices(0, 5, "uniform") == []


def test_raw_video_record_is_bit_exact(clip_path):
    record = records.make_record(str(clip_path), VIDEO, label=1, group="g", source="clip.mp4")
    parsed = schema.parse_example_numpy(record, VIDEO.record_shape)
    expected, count = direct_frames(clip_path, [1, 5, 8, 11, 15, 18], 16)
    assert count == 20 and parsed["source_frame_count"] == 20
    assert list(parsed["frame_indices"]) == [1, 5, 8, 11, 15, 18]
    np.testing.assert_array_equal(parsed["frames"], expected)
    assert (parsed["label"], parsed["label_name"], parsed["source"], parsed["group"]) == (1, "fake", "clip.mp4", "g")


def test_jpeg_video_record_within_tolerance(clip_path):
    spec = PreprocessSpec(kind="video", num_frames=6, size=16, encoding="jpeg", sampling="contiguous")
    parsed = schema.parse_example_numpy(records.make_record(str(clip_path), spec, 0, "g"), spec.record_shape)
    expected, _ = direct_frames(clip_path, list(range(7, 13)), 16)
    difference = np.abs(parsed["frames"].astype(int) - expected)
    # 16x16 frames of sharp gradients are the worst case for JPEG; still a few levels on average.
    assert difference.mean() < 4.0 and difference.max() < 48


def test_wrong_container_frame_count_is_replanned(clip_path, monkeypatch):
    real_open = video_reader._open

    class LyingCapture:
        def __init__(self, capture):
            self.capture = capture

        def get(self, prop):
            return 100.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(video_reader, "_open", lambda path: LyingCapture(real_open(path)))
    sampled = video_reader.sample_video_frames(str(clip_path), 6, "uniform")
    assert sampled.source_frame_count == 20
    assert sampled.frame_indices == [1, 5, 8, 11, 15, 18]
    expected, _ = direct_frames(clip_path, sampled.frame_indices, 16)
    np.testing.assert_array_equal(video_reader.resize_frames(sampled.frames, 16), expected)


def test_short_clip_pad_or_skip(tmp_path):
    path = write_mp4(tmp_path / "short.mp4", moving_clip(2, 3, 32, 32))
    parsed = schema.parse_example_numpy(records.make_record(str(path), VIDEO, 0, "g"), VIDEO.record_shape)
    assert list(parsed["frame_indices"]) == [0, 1, 2, 2, 2, 2] and parsed["padded_frames"] == 3
    np.testing.assert_array_equal(parsed["frames"][5], parsed["frames"][2])
    skip = PreprocessSpec(kind="video", num_frames=6, size=16, short_clips="skip")
    result = records.try_read_content(str(path), skip)
    assert isinstance(result, records.SkippedFile) and "fewer than the 6" in result.reason


def test_portrait_video_with_rotation_metadata_is_upright(tmp_path):
    clip = moving_clip(3, 8, 32, 48)
    clip[:, :, :12] = 255  # white band on the left of the stored (landscape) frames
    stored = write_mp4(tmp_path / "stored.mp4", clip)
    rotated = tmp_path / "portrait.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90",
                    "-i", str(stored), "-c", "copy", str(rotated)], check=True)
    sampled = video_reader.sample_video_frames(str(rotated), 2)
    frame = sampled.frames[0]
    assert frame.shape == (48, 32, 3)  # portrait, as a player shows it
    # Rotated 90 degrees counter-clockwise: the left band is now at the bottom.
    assert frame[-8:].mean() > 240 and frame[:8].mean() < 240


def bad_video_files(tmp_path):
    good = write_mp4(tmp_path / "good.mp4", moving_clip(4, 10, 32, 32))
    data = good.read_bytes()
    files = {}
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # mp4v writes moov last
    files["truncated.mp4"] = "cannot open the video"
    (tmp_path / "empty.mp4").write_bytes(b"")
    files["empty.mp4"] = "empty file"
    (tmp_path / "notes.mp4").write_text("just some text, not a video\n")
    files["notes.mp4"] = "not an image or video"
    ok, jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "photo.mp4").write_bytes(jpeg.tobytes())
    files["photo.mp4"] = "is an image, not a video despite its .mp4 extension"
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "missing-target.mp4")
    files["gone.mp4"] = "cannot read file"
    zero = tmp_path / "zero.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(good), "-frames:v", "0",
                    "-c:v", "mpeg4", str(zero)], check=True)
    files["zero.mp4"] = "no decodable frames|cannot open"
    return files


def test_bad_videos_become_skipped_files_with_reasons(tmp_path):
    for name, reason in bad_video_files(tmp_path).items():
        result = records.try_read_content(str(tmp_path / name), VIDEO)
        assert isinstance(result, records.SkippedFile), name
        assert __import__("re").search(reason, result.reason), (name, result.reason)


IMAGE = PreprocessSpec(kind="image", num_frames=1, size=32, encoding="jpeg")


def write_image(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def test_jpeg_of_target_size_is_stored_byte_for_byte(tmp_path):
    image = moving_clip(5, 1, 32, 32)[0]
    path = write_image(tmp_path / "face.jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    record = records.make_record(str(path), IMAGE, 1, "g")
    example = __import__("tensorflow").train.Example.FromString(record)
    assert example.features.feature[schema.FRAMES].bytes_list.value[0] == path.read_bytes()
    # A JPEG of another size is decoded, resized and re-encoded.
    other = write_image(tmp_path / "big.jpg", cv2.resize(image, (64, 64)))
    example = __import__("tensorflow").train.Example.FromString(records.make_record(str(other), IMAGE, 1, "g"))
    assert example.features.feature[schema.FRAMES].bytes_list.value[0] != other.read_bytes()


@pytest.mark.parametrize("name, image", [
    ("gray.png", np.full((40, 40), 200, np.uint8)),
    ("rgba.png", np.dstack([np.full((40, 40, 3), (10, 20, 30), np.uint8), np.full((40, 40), 128, np.uint8)])),
    ("deep.png", np.full((40, 40, 3), 51400, np.uint16)),  # 51400 >> 8 == 200
    ("gray.jpg", np.full((32, 32), 90, np.uint8)),  # gray JPEG of target size: not kept as is (1 channel)
])
def test_gray_rgba_and_16_bit_images_become_rgb_uint8(tmp_path, name, image):
    path = write_image(tmp_path / name, image)
    spec = PreprocessSpec(kind="image", num_frames=1, size=32, encoding="raw")
    frames = schema.parse_example_numpy(records.make_record(str(path), spec, 0, "g"), spec.record_shape)["frames"]
    assert frames.shape == (1, 32, 32, 3) and frames.dtype == np.uint8
    expected = {"gray.png": (200, 200, 200), "rgba.png": (30, 20, 10), "deep.png": (200, 200, 200),
                "gray.jpg": (90, 90, 90)}[name]
    np.testing.assert_allclose(frames.reshape(-1, 3).mean(axis=0), expected, atol=2)
    jpeg_record = records.make_record(str(path), IMAGE, 0, "g")
    assert schema.parse_example_numpy(jpeg_record, IMAGE.record_shape)["frames"].shape == (1, 32, 32, 3)


def test_tiny_huge_and_broken_images_are_skipped(tmp_path):
    write_image(tmp_path / "dot.png", np.zeros((1, 1, 3), np.uint8))
    write_image(tmp_path / "huge.jpg", np.zeros((10_500, 10_000), np.uint8))  # 105 Mpx, refused from the header
    ok, png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:60])
    (tmp_path / "clip.jpg").write_bytes(write_mp4(tmp_path / "c.mp4", moving_clip(6, 4, 16, 16)).read_bytes())
    reasons = {name: records.try_read_content(str(tmp_path / name), IMAGE) for name in
               ("dot.png", "huge.jpg", "cut.png", "clip.jpg")}
    assert "too small" in reasons["dot.png"].reason
    assert "larger than the" in reasons["huge.jpg"].reason
    assert "cannot decode" in reasons["cut.png"].reason
    assert "is a video, not an image" in reasons["clip.jpg"].reason
    # A large but allowed image is read and shrunk.
    write_image(tmp_path / "large.png", np.full((3000, 2000, 3), 77, np.uint8))
    content = records.read_content(str(tmp_path / "large.png"), IMAGE)
    assert content.frames.shape == (1, 32, 32, 3) and int(content.frames.mean()) == 77


def test_header_size_reads_png_and_jpeg_without_decoding(tmp_path):
    for extension in (".png", ".jpg"):
        ok, data = cv2.imencode(extension, np.zeros((30, 70, 3), np.uint8))
        assert image_reader.header_size(data.tobytes()) == (30, 70)


def write_jpeg_with_orientation(path, rgb, orientation):
    """A JPEG whose EXIF says how to turn `rgb` (the stored pixels) upright, written by Pillow."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())
    return path


def blocks_image(height=24, width=40):
    """Asymmetric solid blocks (JPEG keeps them), so every rotation and mirror looks different."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 4] = (250, 20, 20)
    image[: height // 2, width // 4:] = (20, 250, 20)
    image[height // 2:, : width // 2] = (20, 20, 250)
    image[height // 2:, width // 2:] = (240, 240, 40)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_phone_photos_upright(tmp_path, orientation):
    from PIL import Image, ImageOps
    stored = blocks_image()
    path = write_jpeg_with_orientation(tmp_path / "phone.jpg", stored, orientation)
    data = path.read_bytes()
    assert image_reader.exif_orientation(data) == orientation
    # Pillow's exif_transpose is the independent reference for what "upright" means.
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    decoded = image_reader.decode_image(data)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() < 3
    if orientation != 1:   # the check above can fail: ignoring the tag would give other pixels
        sideways = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_IGNORE_ORIENTATION),
                                cv2.COLOR_BGR2RGB)
        assert sideways.shape != expected.shape or np.abs(sideways.astype(int) - expected).mean() > 30


def test_rotated_jpeg_of_target_size_is_decoded_upright_not_stored_as_is(tmp_path):
    stored = blocks_image(32, 32)
    path = write_jpeg_with_orientation(tmp_path / "phone.jpg", stored, 6)   # "rotate 90 degrees clockwise"
    record = records.make_record(str(path), IMAGE, 1, "g")
    example = __import__("tensorflow").train.Example.FromString(record)
    assert example.features.feature[schema.FRAMES].bytes_list.value[0] != path.read_bytes()
    frames = schema.parse_example_numpy(record, IMAGE.record_shape)["frames"][0]
    expected = cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(frames.astype(int) - expected).mean() < 8
    # Without the tag the same pixels are stored byte-for-byte (the pass-through still applies).
    plain = write_jpeg_with_orientation(tmp_path / "plain.jpg", stored, 1)
    example = __import__("tensorflow").train.Example.FromString(records.make_record(str(plain), IMAGE, 1, "g"))
    assert example.features.feature[schema.FRAMES].bytes_list.value[0] == plain.read_bytes()


def test_exif_orientation_of_malformed_or_missing_metadata_is_upright():
    ok, plain = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert image_reader.exif_orientation(plain.tobytes()) == 1
    assert image_reader.exif_orientation(b"\x89PNG\r\n\x1a\n") == 1
    # An APP1 Exif block cut short, and one whose tag value is out of range.
    truncated = b"\xff\xd8\xff\xe1\x00\x20Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01"
    assert image_reader.exif_orientation(truncated) == 1
    bogus = (b"\xff\xd8\xff\xe1\x00\x22Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01"
             b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x09\x00\x00\x00\x00\x00\x00")
    assert image_reader.exif_orientation(bogus) == 1
    assert image_reader.exif_orientation(bogus.replace(b"\x00\x09\x00\x00", b"\x00\x03\x00\x00")) == 3


def test_plain_jpeg_is_told_from_its_headers(tmp_path):
    from PIL import Image
    color = blocks_image(32, 32)
    encode = lambda image, *params: cv2.imencode(".jpg", image, list(params))[1].tobytes()   # noqa: E731
    assert image_reader.is_plain_jpeg(encode(color))
    assert image_reader.is_plain_jpeg(encode(color, cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    assert not image_reader.is_plain_jpeg(encode(color[:, :, 0]))                  # gray: 1 component
    Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(tmp_path / "cmyk.jpg")
    assert not image_reader.is_plain_jpeg((tmp_path / "cmyk.jpg").read_bytes())    # 4 components
    assert not image_reader.is_plain_jpeg(cv2.imencode(".png", color)[1].tobytes())
    rotated = write_jpeg_with_orientation(tmp_path / "rotated.jpg", color, 8).read_bytes()
    assert not image_reader.is_plain_jpeg(rotated)
    # The gray JPEG of the target size is therefore re-encoded as 3-channel RGB, not stored as is.
    gray = tmp_path / "gray.jpg"
    gray.write_bytes(encode(color[:, :, 0]))
    example = __import__("tensorflow").train.Example.FromString(records.make_record(str(gray), IMAGE, 1, "g"))
    assert example.features.feature[schema.FRAMES].bytes_list.value[0] != gray.read_bytes()
