"""Images: any still image file to RGB uint8, or its own JPEG bytes when usable as is.

A source JPEG that already has the target size and 3 channels is stored
byte-for-byte (with jpeg encoding): re-compression would erase the very
artifacts a detector learns from. Everything else is decoded with
IMREAD_UNCHANGED (so 16-bit and alpha are seen, not silently mangled by
OpenCV's defaults), turned upright by its EXIF orientation, converted to RGB
uint8 and resized.

EXIF orientation matters for phone photos: the camera writes the sensor's
landscape pixels and a tag saying "rotate 90 degrees to view". OpenCV applies
the tag only without IMREAD_UNCHANGED, and TensorFlow's decode_jpeg never
does, so this module applies it itself, and a rotated JPEG is never stored
byte-for-byte (the reader would see it sideways).
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from dfd.preprocess import image_headers, media

# Larger images are refused before decoding: a 30000 x 30000 RGB image is
# 2.7 GB, which would take down a worker (and the machine) rather than one file.
MAX_PIXELS = 100_000_000
# A file larger than any image of MAX_PIXELS (8 bytes a pixel: 16-bit RGBA, uncompressed) is not read
# into memory: a sparse file can claim terabytes and occupy nothing on disk.
MAX_FILE_BYTES = 8 * MAX_PIXELS
MIN_SIDE = 8


class ImageReadError(ValueError):
    """An image that cannot be used; the message says why."""


def read_bytes(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; ImageReadError saying why otherwise."""
    try:
        with media.open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read() if size <= MAX_FILE_BYTES else None
    except OSError as error:
        raise ImageReadError(f"cannot read file: {error.strerror or error}") from error
    except ValueError as error:   # not a regular file
        raise ImageReadError(str(error)) from None
    if data is None:
        raise ImageReadError(f"file is {size / 2**20:,.0f} MB, larger than any image of {MAX_PIXELS:,} pixels "
                             f"({MAX_FILE_BYTES / 2**20:,.0f} MB)")
    return data


# EXIF orientation tag value -> the OpenCV operations (in order) that make the image upright.
# 1 is upright; 2-8 follow the EXIF 2.3 definition (TIFF tag 0x0112).
_UPRIGHT = {
    2: (lambda image: cv2.flip(image, 1),),                           # mirrored left-right
    3: (lambda image: cv2.rotate(image, cv2.ROTATE_180),),
    4: (lambda image: cv2.flip(image, 0),),                           # mirrored top-bottom
    5: (cv2.transpose,),                                              # mirrored along the main diagonal
    6: (lambda image: cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),),
    7: (cv2.transpose, lambda image: cv2.flip(image, -1)),            # mirrored along the other diagonal
    8: (lambda image: cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE),),
}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of JPEG bytes; 1 (upright) when absent, unreadable or out of range."""
    for marker, i in image_headers.jpeg_segments(data):
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\x00\x00":
            length = int.from_bytes(data[i + 2:i + 4], "big")
            return _tiff_orientation(data[i + 10:i + 2 + length])
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """Orientation tag of IFD0 in an EXIF block's TIFF structure; 1 when missing or malformed."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for entry in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        start = ifd + 2 + 12 * entry
        if start + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[start:start + 2], order) == 0x0112:
            value = int.from_bytes(tiff[start + 8:start + 10], order)   # a SHORT, left-justified
            return value if 1 <= value <= 8 else 1
    return 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as it is meant to be viewed, given its EXIF orientation."""
    for operation in _UPRIGHT.get(orientation, ()):
        image = operation(image)
    return image


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes to upright RGB uint8 (H, W, 3), whatever the source depth and channels."""
    buffer = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise ImageReadError("OpenCV cannot decode the image (corrupt, truncated or unsupported format)")
    image = upright(image, exif_orientation(data))
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        # Keep the top 8 bits: the full 16-bit range maps onto 0..255.
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        # Transparent pixels become what their colour channels say (usually black);
        # face datasets with alpha are rare and carry no signal in the alpha channel.
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise ImageReadError(f"unsupported channel count {image.shape[2]}")


# Start-of-frame markers of Huffman-coded baseline, extended and progressive JPEG: what every
# decoder (OpenCV's and TensorFlow's decode_jpeg alike) reads. The other SOF kinds (lossless,
# arithmetic, hierarchical) are rare and not trusted to round-trip as stored bytes.
_PLAIN_SOF = (0xC0, 0xC1, 0xC2)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the image's header, without decoding pixels (dfd.preprocess.image_headers)."""
    return image_headers.image_size(data)


def is_plain_jpeg(data: bytes) -> bool:
    """True for an upright 8-bit 3-channel baseline or progressive JPEG: what TF's decode_jpeg reads
    as the image itself. Read from the headers; the pixels were already decoded once by the caller.

    EXIF-rotated JPEGs are excluded: decode_jpeg ignores the tag, so their stored bytes would
    train and predict on a sideways face.
    """
    frame = image_headers.jpeg_frame(data)
    return (frame is not None and frame[0] in _PLAIN_SOF and frame[1] == 8 and frame[4] == 3
            and exif_orientation(data) == 1)


def read_image_and_bytes(path: str) -> tuple[np.ndarray, bytes]:
    data = read_bytes(path)
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    size = header_size(data)
    if size is None:
        # Decoding blind could allocate anything the header claims (OpenCV allows 2^30 pixels).
        raise ImageReadError("cannot read the image's size from its header (damaged, or not a JPEG, PNG, "
                             "WebP, TIFF or BMP); re-save it as PNG or JPEG")
    if size[0] * size[1] > MAX_PIXELS:
        raise ImageReadError(f"image is {size[1]}x{size[0]}, larger than the {MAX_PIXELS:,}-pixel limit; "
                             "shrink it before converting or scoring it")
    image = decode_image(data)
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(f"image is {width}x{height}: too small to hold a face (sides must be >= {MIN_SIDE})")
    return image, data
