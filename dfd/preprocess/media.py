"""What a file is, judged from its first bytes rather than its extension.

Datasets scraped from the web hold JPEGs named .png, text files named .mp4 and
so on. Sniffing the header lets the converter give a precise skip reason
("an image, not a video") instead of a decoder's generic failure.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def extension_kind(path: str) -> str | None:
    """'image', 'video' or None from the file name alone."""
    extension = os.path.splitext(path)[1].lower()
    if extension in VIDEO_EXTENSIONS:
        return "video"
    if extension in IMAGE_EXTENSIONS:
        return "image"
    return None


def sniff(header: bytes) -> str | None:
    """'image', 'video' or None from a file's first (at least 16) bytes."""
    if header.startswith(b"\xff\xd8\xff") or header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if header.startswith(b"BM") or header[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "image"
    if header[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "video"  # ISO base media (mp4, mov, m4v, 3gp)
    if header[:4] == b"RIFF" and header[8:12] == b"AVI ":
        return "video"
    if header.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return "video"
    if header.startswith(b"\x00\x00\x01\xba") or header.startswith(b"\x00\x00\x01\xb3"):
        return "video"  # MPEG program or elementary stream
    if header.startswith(b"FLV") or header.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video"  # FLV, ASF/WMV
    return None


_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    return f"not a regular file ({what}); only regular files are read"


def open_regular(path: str):
    """`path` opened for binary reading; ValueError saying what it is when not a regular file (OSError
    when it cannot be opened).

    Only regular files: reading a FIFO blocks until something writes to it (dfd.predict never
    returned), and a device such as /dev/zero never ends. stat() first (opening some devices acts),
    then the open itself is non-blocking and checked again on its descriptor, so a file swapped for
    a FIFO in between cannot block either (O_NONBLOCK changes nothing for a regular file).
    """
    reason = _not_regular(os.stat(path).st_mode)
    if reason is None:
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
        reason = _not_regular(os.fstat(handle.fileno()).st_mode)
        if reason is None:
            return handle
        handle.close()
    raise ValueError(reason)


def read_header(path: str, count: int = 16) -> tuple[int, bytes]:
    """(size in bytes, first `count` bytes) of a regular file; ValueError with the reason otherwise."""
    try:
        with open_regular(path) as handle:
            return os.fstat(handle.fileno()).st_size, handle.read(count)
    except OSError as error:
        raise ValueError(f"cannot read file: {error.strerror or error}") from None


def check_file(path: str, kind: str) -> str | None:
    """Returns a reason the file cannot be a `kind`, or None when it may be.

    Raises nothing: unreadable files (missing, dangling links, permissions, FIFOs and devices)
    come back as a reason string like every other problem.
    """
    try:
        size, header = read_header(path)
    except ValueError as error:
        return str(error)
    if size == 0:
        return "empty file (0 bytes)"
    content = sniff(header)
    if content is None:
        return "not an image or video file (unrecognised content)"
    if content != kind:
        named = extension_kind(path)
        note = f" despite its {os.path.splitext(path)[1]} extension" if named == kind else ""
        return (f"is {'an image' if content == 'image' else 'a video'}, "
                f"not {'an image' if kind == 'image' else 'a video'}{note}")
    return None


@contextlib.contextmanager
def opencv_path(path: str):
    """`path` in a form OpenCV can open: itself, or a temporary link with an ASCII name.

    A file name that is not valid UTF-8 reaches Python as a str with surrogate escapes
    (os.fsdecode); OpenCV's Python binding cannot encode it and cv2.VideoCapture crashed the
    whole process with a segmentation fault (opencv-python 4.x). A link named `video<ext>` in a
    private temporary folder, pointing at the file's real bytes, opens the same file.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    extension = os.path.splitext(path)[1].encode("ascii", "ignore").decode() if path else ""
    with tempfile.TemporaryDirectory(prefix="dfd-name-") as folder:
        link = os.path.join(folder, "video" + extension)
        os.symlink(os.fsencode(os.path.abspath(path)), link)
        yield link
