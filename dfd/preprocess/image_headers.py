"""An image's size read from its header, without decoding a pixel: one small parser per format.

Every format dfd reads as an image (media.sniff: JPEG, PNG, WebP, TIFF, BMP) has a parser here, so
image_reader can refuse a huge image before OpenCV allocates it: an 8.6 KB lossless WebP of 15000 x
15000 took 2.0 GB to decode, and OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS) is 2^30 pixels. A
file whose size no parser can read gets None, and image_reader refuses it rather than decode it blind.

Each parser reads what the decoder OpenCV picks for those first bytes reads: the first frame header
of a JPEG, PNG's IHDR, WebP's VP8/VP8L frame header or VP8X canvas, the first TIFF directory (and its
tile size: OpenCV allocates one tile at a time), a BMP's info header.
"""

from __future__ import annotations


def jpeg_segments(data: bytes):
    """(marker, offset) of each JPEG header segment, up to the image data; stops at anything malformed."""
    if not data.startswith(b"\xff\xd8"):
        return
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:   # fill byte
            i += 1
            continue
        if marker in (0xD9, 0xDA):   # end of image / start of scan: no header segments after this
            return
        yield marker, i
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")


def jpeg_frame(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, sample precision, height, width, components) from a JPEG's frame header."""
    for marker, i in jpeg_segments(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 < len(data):
            return (marker, data[i + 4], int.from_bytes(data[i + 5:i + 7], "big"),
                    int.from_bytes(data[i + 7:i + 9], "big"), data[i + 9])
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    frame = jpeg_frame(data)
    return None if frame is None else frame[2:4]


def _png_size(data: bytes) -> tuple[int, int] | None:
    # The first chunk must be IHDR (libpng refuses anything else): width, then height, big-endian.
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """From the first chunk: a lossy VP8 frame header, a lossless VP8L header, or an extended file's
    VP8X canvas (libwebp refuses a still image whose frame differs from its canvas, and frames of
    an animation must fit inside it)."""
    chunk, payload = data[12:16], data[20:30]
    if len(payload) < 10:
        return None
    if chunk == b"VP8 " and payload[3:6] == b"\x9d\x01\x2a":
        # 14 bits of size and 2 of upscaling hint (the decoder ignores the hint).
        return (int.from_bytes(payload[8:10], "little") & 0x3FFF, int.from_bytes(payload[6:8], "little") & 0x3FFF)
    if chunk == b"VP8L" and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(payload[7:10], "little") + 1, int.from_bytes(payload[4:7], "little") + 1
    return None


_TIFF_WIDTH, _TIFF_LENGTH, _TIFF_TILE_WIDTH, _TIFF_TILE_LENGTH = 256, 257, 322, 323
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _tiff_tags(data: bytes) -> dict[int, int] | None:
    """The SHORT and LONG single values of a TIFF's first directory (tag -> value); None when malformed."""
    order = {b"II": "little", b"MM": "big"}.get(data[:2])
    if order is None or len(data) < 8:
        return None
    directory = int.from_bytes(data[4:8], order)
    if directory + 2 > len(data):
        return None
    tags = {}
    for entry in range(int.from_bytes(data[directory:directory + 2], order)):
        start = directory + 2 + 12 * entry
        if start + 12 > len(data):
            return None
        tag, kind = int.from_bytes(data[start:start + 2], order), int.from_bytes(data[start + 2:start + 4], order)
        count = int.from_bytes(data[start + 4:start + 8], order)
        if count == 1 and kind in (_TIFF_SHORT, _TIFF_LONG):
            # The value sits left-justified in the entry's last 4 bytes.
            tags[tag] = int.from_bytes(data[start + 8:start + (10 if kind == _TIFF_SHORT else 12)], order)
    return tags


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of the first page; a tile larger than the image counts as the size, since
    OpenCV's decoder allocates a whole tile (up to 1 GiB) however small the image it tiles."""
    tags = _tiff_tags(data)
    if tags is None or _TIFF_WIDTH not in tags or _TIFF_LENGTH not in tags:
        return None
    height, width = tags[_TIFF_LENGTH], tags[_TIFF_WIDTH]
    tile = tags.get(_TIFF_TILE_LENGTH, 0), tags.get(_TIFF_TILE_WIDTH, 0)
    return max((height, width), tile, key=lambda size: size[0] * size[1])


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:   # OS/2 1.x BITMAPCOREHEADER: 16-bit sides
        return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
    if header >= 16:   # BITMAPINFOHEADER and its successors: 32-bit sides, a negative height is top-down
        return (abs(int.from_bytes(data[22:26], "little", signed=True)),
                abs(int.from_bytes(data[18:22], "little", signed=True)))
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG, PNG, WebP, TIFF or BMP from its header; None for anything else or a
    header too malformed to read (decode nothing then: its size is unknown)."""
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_size(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if data.startswith(b"BM"):
        return _bmp_size(data)
    return None
