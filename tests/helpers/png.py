"""PNG files written chunk by chunk: huge black images in a few KB, and damaged ones.

A black image's pixel data is all zeros (filter byte 0 and 0 samples on every row), and zeros
compress to almost nothing: the zlib stream is one deflated block of zeros, ended with a full
flush (byte-aligned, no reference to what came before), repeated as often as the image needs,
then an empty final block and the Adler-32 of n zeros, which is (n mod 65521) << 16 | 1. So
a 20000x20000 PNG (1.2 GB decoded) takes milliseconds to write instead of seconds to compress.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROWS_PER_BLOCK = 64


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def zeros_stream(rows: int, row_bytes: int) -> bytes:
    """A zlib stream of rows x row_bytes zero bytes."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: header and sum are ours
    per_block = min(rows, ROWS_PER_BLOCK)
    block = deflate.compress(bytes(per_block * row_bytes)) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = block * (rows // per_block)
    if rows % per_block:
        body += deflate.compress(bytes(rows % per_block * row_bytes))
    total = rows * row_bytes
    return b"\x78\xda" + body + deflate.flush() + struct.pack(">I", (total % 65521) << 16 | 1)


def black_png(width: int, height: int, before_idat: bytes = b"") -> bytes:
    """An 8-bit RGB PNG of width x height black pixels; `before_idat`: extra chunks."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data = chunk(b"IDAT", zeros_stream(height, 1 + 3 * width))
    return SIGNATURE + header + before_idat + data + chunk(b"IEND", b"")


def claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose header says width x height but whose data is a few zeros."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return SIGNATURE + header + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


def with_bad_idat_crc(png: bytes) -> bytes:
    """`png` with its first IDAT chunk's CRC flipped: libpng says `IDAT: CRC error`."""
    at = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[at - 4 : at])
    crc = at + 4 + length
    return png[:crc] + bytes(b ^ 0xFF for b in png[crc : crc + 4]) + png[crc + 4 :]


# An iCCP chunk too short to hold a profile: the image decodes, libpng warns `iCCP: too short`
SHORT_ICCP = chunk(b"iCCP", b"x\0\0garbage")
