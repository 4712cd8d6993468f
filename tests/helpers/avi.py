"""Motion-JPEG AVI files written byte by byte, with what OpenCV's writer cannot make: index
entries of zero length, which some encoders write for "repeat the previous frame".

An AVI is a RIFF file: `RIFF 'AVI '` holding a `hdrl` list (the main header `avih`, one
stream's `strh` and its BITMAPINFOHEADER `strf`), a `movi` list of `00dc` chunks (one JPEG
each, or nothing) and an `idx1` index of every chunk's offset and length. The container's
frame count (avih and strh) counts every entry; FFmpeg delivers only the non-empty ones.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

AVIF_HASINDEX = 0x10
AVIIF_KEYFRAME = 0x10


def _chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, body: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body


def write_avi(path: Path, frames: Sequence[np.ndarray | None], fps: int = 25) -> Path:
    """An MJPEG AVI of `frames` (BGR images of one size); None is a zero-length entry."""
    height, width = next(f for f in frames if f is not None).shape[:2]
    jpegs = [b"" if f is None else cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
    count = len(frames)
    avih = struct.pack(
        "<10I4I", 1_000_000 // fps, 0, 0, AVIF_HASINDEX, count, 0, 1, 0, width, height, 0, 0, 0, 0
    )
    strh = b"vidsMJPG" + struct.pack(
        "<IHHIIIIIIiI4h", 0, 0, 0, 0, 1, fps, 0, count, 0, -1, 0, 0, 0, width, height
    )
    strf = struct.pack(
        "<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG", width * height * 3, 0, 0, 0, 0
    )
    strl = _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf))
    hdrl = _list(b"hdrl", _chunk(b"avih", avih) + strl)
    movi, index = b"", b""
    for jpeg in jpegs:
        offset = 4 + len(movi)  # from the 'movi' fourcc, as idx1 counts
        movi += _chunk(b"00dc", jpeg)
        flags = AVIIF_KEYFRAME if jpeg else 0
        index += b"00dc" + struct.pack("<III", flags, offset, len(jpeg))
    body = b"AVI " + hdrl + _list(b"movi", movi) + _chunk(b"idx1", index)
    Path(path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return Path(path)


def with_repeats(count: int, every: int, size: tuple[int, int] = (160, 120)) -> list:
    """`count` entries, every `every`-th a real frame of brightness 3 * i (mod 256), the rest
    zero-length repeats."""
    width, height = size
    return [
        np.full((height, width, 3), (3 * i) % 256, np.uint8) if i % every == 0 else None
        for i in range(count)
    ]
