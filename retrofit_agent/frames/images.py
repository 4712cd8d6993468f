"""Frames the agent refuses by their size, and one image file read within bounds.

Memory follows a frame's dimensions, not its file's size: a decoder allocates width x height
x 3 bytes first (a 389 KB PNG of 20000x20000 took the dry run to 2.4 GB), and the shortest-side
resize of a thin frame grows with its aspect ratio (1x1000000 pixels resized for a 64 px student
is a 12 GB buffer). So a video's frame size is checked when it opens, and an image's from its
header (frames.imagesize) before it is decoded: more than `capture.max_pixels`, or more than
MAX_ASPECT times as long as it is wide, is refused.

An image file is read whole (a regular file only, within 4 bytes per allowed pixel) and
decoded from memory; what the decoder writes to stderr (libpng's `IDAT: CRC error`) becomes
part of the agent's one-line error instead of a line of its own.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from retrofit_agent.common import stderr
from retrofit_agent.common.files import read_limited
from retrofit_agent.errors import SourceError, printable, shorten
from retrofit_agent.frames.imagesize import image_size

MAX_ASPECT = 16  # panoramas and dual dashcams are 2:1 to 4:1
BYTES_PER_PIXEL = 4  # an image file's bound: 8-bit RGBA stored raw, plus METADATA_BYTES
METADATA_BYTES = 1 << 20


def check_frame_size(name: object, width: int, height: int, max_pixels: int) -> None:
    """SourceError naming `name` if a width x height frame is one the agent refuses."""
    name = printable(name)
    if width * height > max_pixels:
        raise SourceError(
            f"{name}: {width}x{height} is {width * height} pixels, more than "
            f"capture.max_pixels ({max_pixels})"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise SourceError(
            f"{name}: {width}x{height} is more than {MAX_ASPECT} times as long as it is wide"
        )


def read_image(path: Path, max_pixels: int) -> np.ndarray:
    """The BGR image in file `path`; SourceError naming it if it is refused or unreadable."""
    limit = BYTES_PER_PIXEL * max_pixels + METADATA_BYTES
    data = read_limited(path, limit, SourceError, "image")
    try:
        width, height = image_size(data)
    except ValueError as exc:
        raise SourceError(f"{printable(path)}: not a readable image ({exc})") from None
    check_frame_size(path, width, height, max_pixels)
    with stderr.captured() as decoder:
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
    if image is None:
        said = f" ({shorten(decoder.text, 160)})" if decoder.text else ""
        raise SourceError(f"{printable(path)}: not a readable image{said}")
    return image
