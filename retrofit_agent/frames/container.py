"""Whether a video file is cut short: its container declares more bytes than the file holds.

A container's frame count is not the number of frames a decoder delivers: an AVI may index
"repeat the previous frame" entries of zero length (376 of 444 in a complete file from one
encoder; FFmpeg delivers the other 68), and some containers only estimate the count from the
duration. Comparing the two called complete files truncated. What does tell a truncated file
is its structure: AVI (RIFF), MP4/MOV (ISO BMFF) and Matroska/WebM give the size of their
top-level parts, and a file that ends inside one was cut. Other containers (MPEG-TS, raw
streams) declare no size; for them `truncated` cannot tell and says False.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MATROSKA_SEGMENT = 0x18538067
MAX_BOXES = 10_000  # top-level parts walked; real files have a handful


def truncated(path: Path) -> bool:
    """True if the file ends before the end its container declares (False: it does not, or
    the container does not say, or the file cannot be read any more)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if head[:4] == b"RIFF":
                return _parts_past_end(f, size, _riff_part)
            if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return _parts_past_end(f, size, _bmff_part)
            if head[:4] == EBML_MAGIC:
                return _matroska_past_end(f, size)
    except OSError:
        pass
    return False


def _parts_past_end(f: BinaryIO, size: int, part_length: Callable[[bytes], int | None]) -> bool:
    """Walk consecutive top-level parts from the start; True if one ends past `size`."""
    offset = 0
    for _ in range(MAX_BOXES):
        if offset >= size:
            return False
        f.seek(offset)
        length = part_length(f.read(16))
        if length is None:
            return False  # the last part runs to the end of the file, or cannot be read
        if offset + length > size:
            return True
        offset += length
    return False


def _riff_part(header: bytes) -> int | None:
    """RIFF (and OpenDML's following RIFF AVIX parts): id, 32-bit size, padded to even."""
    if len(header) < 8 or header[:4] != b"RIFF":
        return None
    (length,) = struct.unpack_from("<I", header, 4)
    return 8 + length + (length & 1)


def _bmff_part(header: bytes) -> int | None:
    """An ISO BMFF box: 32-bit size and type, size 1: a 64-bit size follows, 0: to the end."""
    if len(header) < 8:
        return None
    (length,) = struct.unpack_from(">I", header)
    if length == 1:
        if len(header) < 16:
            return None
        (length,) = struct.unpack_from(">Q", header, 8)
        return length if length >= 16 else None
    if length == 0:
        return None
    return length if length >= 8 else None


def _vint(data: bytes, offset: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at `offset`: (value, its length in bytes)."""
    if offset >= len(data) or data[offset] == 0:
        return None
    width = 9 - data[offset].bit_length()
    if offset + width > len(data):
        return None
    value = int.from_bytes(data[offset : offset + width], "big")
    if not keep_marker:
        value &= (1 << (7 * width)) - 1
    return value, width


def _matroska_past_end(f: BinaryIO, size: int) -> bool:
    """The EBML header, then the Segment: True if its declared size ends past `size`."""
    f.seek(0)
    data = f.read(64 * 1024)
    offset = 0
    for _ in range(2):  # the EBML header element, then the Segment
        element = _vint(data, offset, keep_marker=True)
        length = element and _vint(data, offset + element[1], keep_marker=False)
        if not element or not length:
            return False
        body = offset + element[1] + length[1]
        if element[0] == MATROSKA_SEGMENT:
            unknown = length[0] == (1 << (7 * length[1])) - 1  # all ones: size not known
            return not unknown and body + length[0] > size
        offset = body + length[0]
    return False
