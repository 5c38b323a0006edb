"""Decode images as BGR uint8 frames: any common file, whatever its depth or channels, and
JPEGs at a reduced scale when the model needs only a small picture.

libjpeg can decode at 1/2, 1/4 or 1/8 of the size by averaging in the DCT domain: a 640x480
JPEG for a 64 px model decodes at 160x120, faster than at full size, and leaves the resize
after it a sixteenth of the pixels (README: how it trains). Training and the live worker both
decode this way, so the model sees the same pixels in both.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def is_image_file(path: Path) -> bool:
    """Visible files with a known image extension (case ignored)."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Grayscale, BGRA and 16-bit images -> BGR uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def read_image(path: str | Path, min_side: int = 0) -> np.ndarray | None:
    """The image as BGR uint8, or None when the file cannot be decoded.

    With `min_side`, a JPEG may come back reduced (never below min_side on either side): for
    callers that resize to min_side next anyway.
    """
    return image_from_bytes(np.fromfile(str(path), dtype=np.uint8), min_side)


def image_from_bytes(data: np.ndarray, min_side: int = 0) -> np.ndarray | None:
    """read_image of a file's bytes (uint8 array) already read."""
    if data.size == 0:
        return None
    header = jpeg_header(data[:JPEG_HEADER_SEARCH].tobytes()) if min_side else None
    scale = jpeg_scale(header.width, header.height, min_side) if header else 1
    # Both apply EXIF orientation, as every photo viewer does: a portrait phone photo is stored
    # sideways with a note to turn it. Alpha is dropped; 16-bit and float depths are kept.
    flags = _REDUCED[scale] if scale > 1 else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    image = cv2.imdecode(data, flags)
    if image is None:  # one-channel or 4-channel float and int32 TIFFs decode only unchanged
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return to_bgr8(image)


JPEG_HEADER_SEARCH = 64 * 1024  # the frame header comes before the image data, near the start
_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame, any coding
_PROGRESSIVE_MARKERS = {0xC2, 0xC6, 0xCA, 0xCE}


def jpeg_scale(width: int, height: int, min_side: int) -> int:
    """The largest JPEG decoding reduction (1, 2, 4 or 8) that keeps both sides >= min_side."""
    for scale in (8, 4, 2):
        if min(_reduced(width, scale), _reduced(height, scale)) >= min_side:
            return scale
    return 1


def reduced_shape(width: int, height: int, scale: int) -> tuple[int, int, int]:
    """The (height, width, 3) a JPEG of this size decodes to at 1/scale (libjpeg rounds up)."""
    return _reduced(height, scale), _reduced(width, scale), 3


def decode_jpeg(data: bytes, scale: int = 1) -> np.ndarray | None:
    """A JPEG (already known to be one) as BGR uint8 at 1/scale of its size; None if broken.

    EXIF orientation is ignored: a camera frame's pixels are as its header describes them.
    """
    flag = _REDUCED[scale] if scale > 1 else cv2.IMREAD_COLOR
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)


class JpegHeader(NamedTuple):
    width: int
    height: int
    progressive: bool  # decoded from coefficient buffers the size of the whole image


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size and coding from a JPEG's frame header, read without decoding; None if there is no
    JPEG frame header before the image data."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF_MARKERS:  # length, precision, height, width
            height, width = struct.unpack_from(">HH", data, i + 5)
            return JpegHeader(width, height, marker in _PROGRESSIVE_MARKERS)
        elif marker == 0xDA or marker < 0xC0:  # image data before any frame header, or junk
            return None
        else:
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    return None


def jpeg_as_is(data: bytes) -> JpegHeader | None:
    """The header of a JPEG that shows the same pixels decoded as it is as read_image gives
    (8-bit samples, no EXIF orientation to apply), so it can be published without decoding;
    None when it is not one."""
    header = jpeg_header(data[:JPEG_HEADER_SEARCH])
    if header is None:
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack_from(">H", data, i + 2)[0]
        if marker in _SOF_MARKERS:
            return header if data[i + 4 : i + 5] == b"\x08" else None  # sample precision
        if marker == 0xE1 and exif_orientation(data[i + 4 : i + 2 + length]) not in (None, 1):
            return None
        i += 2 + length
    return None


def exif_orientation(app1: bytes) -> int | None:
    """The orientation tag (1 = as stored) of an APP1 segment's EXIF block; None if absent."""
    if app1[:6] != b"Exif\0\0" or app1[6:8] not in (b"II", b"MM"):
        return None
    tiff, order = app1[6:], "<" if app1[6:8] == b"II" else ">"
    try:
        ifd = struct.unpack_from(order + "I", tiff, 4)[0]
        for entry in range(struct.unpack_from(order + "H", tiff, ifd)[0]):
            tag, _, _, value = struct.unpack_from(order + "HHIH", tiff, ifd + 2 + 12 * entry)
            if tag == 0x0112:
                return value
    except struct.error:  # a truncated EXIF block: treat as unknown, so decode
        return 0
    return None


def _reduced(side: int, scale: int) -> int:
    return -(-side // scale)
