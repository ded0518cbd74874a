"""The one image reader: official decoding (OpenCV, IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION, BGR -> RGB),
refusing files that OpenCV would decode into a silently wrong picture.

OpenCV decodes a cut-off JPEG or one with corrupt entropy-coded data with only a libjpeg warning on the C
stderr and grey or garbled rows in the result. Training on that, or drawing 228 people on grey padding,
is a silent wrong result; so a truncated file (no end-of-image marker after the last scan) and any libjpeg
"Corrupt JPEG data" / "Premature end" warning are errors. The one benign warning ("extraneous bytes before
marker", a few stray bytes between segments; the picture decodes completely) is allowed.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from distill.errors import DataError

DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
BENIGN_LIBJPEG = ("extraneous bytes before marker",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(DataError):
    """An image file is missing, unreadable, truncated, corrupt, or not the size the annotation file says."""


def jpeg_truncated(data: bytes) -> bool:
    """True for a JPEG whose last scan has no end-of-image marker after it (a cut-off file).

    Entropy-coded data byte-stuffs 0xFF, so FF D9 / FF DA only appear as markers."""
    if not data.startswith(b"\xff\xd8"):
        return False
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def _decode_capturing_stderr(data: bytes) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode with the process's fd 2 redirected, so libjpeg's warnings can be read (and are not printed)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            img = cv2.imdecode(buf, DECODE_FLAGS)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return img, capture.read().decode("utf-8", "replace")


def read_image_file(path: str | os.PathLike[str], what: str | None = None, check_jpeg: bool = True) -> np.ndarray:
    """(h, w, 3) uint8 RGB. Raises `ImageReadError` naming `what` (default: the path) and the fault."""
    path = Path(path)
    what = what or f"image file {path}"
    if not path.is_file():
        raise ImageReadError(f"{what} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{what} could not be read: {exc.strerror or exc}") from None
    is_jpeg = data.startswith(b"\xff\xd8")
    if check_jpeg and is_jpeg:
        if jpeg_truncated(data):
            raise ImageReadError(f"{what} is a truncated JPEG (no end-of-image marker after its last scan)")
        img, messages = _decode_capturing_stderr(data)
        bad = [m.strip() for m in messages.splitlines()
               if m.strip() and not any(b in m for b in BENIGN_LIBJPEG)]
        if bad and img is not None:
            raise ImageReadError(f"{what} is a corrupt JPEG (libjpeg: {bad[0]}); it would decode into a wrong picture")
    else:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), DECODE_FLAGS)
    if img is None:
        raise ImageReadError(f"{what} could not be decoded as an image (corrupt or not an image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def list_images(path: Path) -> list[Path]:
    """An image file as a list of one, or a folder's image files (by suffix), sorted by name."""
    if path.is_file():
        return [path]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    raise DataError(f"{path}: no such image or folder")


def image_id_of(path: Path) -> int | str:
    """The image id a file gets when no annotation file names it (`distill predict`, `distill image-info`): the
    stem as an integer when it is one (COCO names: 000000000139.jpg -> 139), else the file name."""
    return int(path.stem) if path.stem.isdigit() else path.name
