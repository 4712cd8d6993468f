"""An image's width and height from its header, before anything decodes it.

A decoder allocates the whole image first: a 389 KB PNG that says 20000x20000 took the dry run
to 2.4 GB, and one over 2^30 pixels made OpenCV raise. Reading the size from the header costs a
few bytes, so an image above `capture.max_pixels` is refused before OpenCV sees it. The formats
are those of capture.IMAGE_SUFFIXES, recognised by their signature (not their name): PNG,
JPEG, BMP, WebP and TIFF. Anything else, or a header that ends early or contradicts itself, is
a ValueError saying what is wrong; the caller names the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): not C4, C8, CC
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
TIFF_WIDTH, TIFF_HEIGHT = 256, 257
TIFF_SHORT, TIFF_LONG = 3, 4


def unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    """struct.unpack_from that reports a header ending early as a ValueError of its own."""
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise ValueError("the header ends early")
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> tuple[int, int]:
    length, kind = unpack(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ValueError("PNG without an IHDR chunk first")
    return unpack(">II", data, 16)


def _jpeg(data: bytes) -> tuple[int, int]:
    offset = 2
    while True:
        (mark,) = unpack("B", data, offset)
        if mark != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {offset}")
        (marker,) = unpack("B", data, offset + 1)
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in JPEG_STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            raise ValueError("JPEG without a frame header")
        (length,) = unpack(">H", data, offset + 2)
        if length < 2:
            raise ValueError(f"JPEG segment of length {length} at byte {offset}")
        if marker in JPEG_SOF:
            _precision, height, width = unpack(">BHH", data, offset + 4)
            if height == 0:
                raise ValueError("JPEG whose height is given after the first scan (DNL)")
            return width, height
        offset += 2 + length


def _bmp(data: bytes) -> tuple[int, int]:
    (header,) = unpack("<I", data, 14)
    if header == 12:  # BITMAPCOREHEADER
        return unpack("<HH", data, 18)
    width, height = unpack("<ii", data, 18)
    return abs(width), abs(height)  # a negative height: rows stored top-down


def _webp(data: bytes) -> tuple[int, int]:
    (kind,) = unpack("4s", data, 12)
    if kind == b"VP8 ":  # lossy: a key frame's header after the 3-byte frame tag
        if unpack("3s", data, 23)[0] != b"\x9d\x01\x2a":
            raise ValueError("WebP VP8 frame without its start code")
        width, height = unpack("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":  # lossless: 14 bits each, minus one, after the signature byte
        signature, bits = unpack("<BI", data, 20)
        if signature != 0x2F:
            raise ValueError("WebP VP8L without its signature")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        width = int.from_bytes(unpack("3s", data, 24)[0], "little") + 1
        height = int.from_bytes(unpack("3s", data, 27)[0], "little") + 1
        return width, height
    raise ValueError(f"WebP with an unknown first chunk {kind!r}")


def _tiff(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = unpack(order + "I", data, 4)
    (count,) = unpack(order + "H", data, ifd)
    found: dict[int, int] = {}
    for entry in range(count):
        tag, kind, _n = unpack(order + "HHI", data, ifd + 2 + 12 * entry)
        if tag in (TIFF_WIDTH, TIFF_HEIGHT) and kind in (TIFF_SHORT, TIFF_LONG):
            fmt = order + ("H" if kind == TIFF_SHORT else "I")
            found[tag] = unpack(fmt, data, ifd + 2 + 12 * entry + 8)[0]
    if TIFF_WIDTH not in found or TIFF_HEIGHT not in found:
        raise ValueError("TIFF without ImageWidth and ImageLength in its first directory")
    return found[TIFF_WIDTH], found[TIFF_HEIGHT]


FORMATS: list[tuple[Callable[[bytes], bool], Callable[[bytes], tuple[int, int]]]] = [
    (lambda d: d.startswith(PNG), _png),
    (lambda d: d.startswith(b"\xff\xd8"), _jpeg),
    (lambda d: d.startswith(b"BM"), _bmp),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", _webp),
    (lambda d: d[:4] in (b"II*\0", b"MM\0*"), _tiff),
]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the image whose file starts with `data`; ValueError if unknown."""
    for matches, read in FORMATS:
        if matches(data):
            width, height = read(data)
            if width <= 0 or height <= 0:
                raise ValueError(f"header says {width}x{height} pixels")
            return width, height
    raise ValueError("not a PNG, JPEG, BMP, WebP or TIFF image")
