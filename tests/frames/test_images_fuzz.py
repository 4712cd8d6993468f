"""Fuzz: any image file is an image within the frame bounds, ready to preprocess, or one
SourceError; whatever its decoder says stays inside that error."""

import struct

import cv2
import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz suite needs the [dev] extra")
from helpers.fuzz import mutated
from helpers.png import SIGNATURE, chunk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrofit_agent.errors import SourceError
from retrofit_agent.frames.images import MAX_ASPECT, read_image
from retrofit_agent.frames.imagesize import image_size
from retrofit_agent.frames.preprocess import Preprocessor

MAX_PIXELS = 1 << 16  # small: the fuzz decodes thousands of images
SUFFIXES = [".png", ".jpg", ".bmp", ".webp", ".tiff"]
PREPROCESS = Preprocessor(64, 64, "bicubic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
sides = st.integers(1, 96)
# capfd is emptied for each example by readouterr(): what it holds is that example's alone
with_capfd = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def encoded(suffix: str, width: int, height: int, seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    return cv2.imencode(suffix, image)[1].tobytes()


def headers(width: int, height: int) -> list[bytes]:
    """The start of a file of each format claiming width x height, or as much of it as the
    format's fields hold (the rest of the file is missing)."""
    ihdr = struct.pack(">IIBBBBB", min(width, 2**31 - 1), min(height, 2**31 - 1), 8, 2, 0, 0, 0)
    png = SIGNATURE + chunk(b"IHDR", ihdr) + bytes(16)
    bmp = (
        b"BM" + bytes(12) + struct.pack("<Iii", 40, min(width, 2**31 - 1), -min(height, 2**31 - 1))
    )
    bmp += bytes(28)
    short = struct.pack(">HH", min(height, 65535), min(width, 65535))
    jpeg = b"\xff\xd8\xff\xc0\x00\x11\x08" + short + bytes(12)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4)
    vp8x += (min(width, 2**24) - 1).to_bytes(3, "little")
    vp8x += (min(height, 2**24) - 1).to_bytes(3, "little")
    webp = b"RIFF" + struct.pack("<I", len(vp8x) + 4) + b"WEBP" + vp8x
    tiff = b"II*\0" + struct.pack("<IH", 8, 2)
    tiff += struct.pack("<HHII", 256, 4, 1, width) + struct.pack("<HHII", 257, 4, 1, height)
    return [png, bmp, jpeg, webp, tiff]


def reads_or_refuses(tmp_path, data: bytes, capfd) -> np.ndarray | None:
    path = tmp_path / "frame.img"
    path.write_bytes(data)
    try:
        image = read_image(path, MAX_PIXELS)
    except SourceError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        image = None
    else:
        height, width = image.shape[:2]
        assert image.dtype == np.uint8 and image.shape[2] == 3
        assert width * height <= MAX_PIXELS and max(width, height) <= MAX_ASPECT * min(
            width, height
        )
        assert PREPROCESS(image).shape == (1, 3, 64, 64)
    err = capfd.readouterr().err
    assert not err, err  # libpng, libjpeg, libtiff: nothing of theirs on stderr
    return image


@with_capfd
@given(st.sampled_from(SUFFIXES), sides, sides, st.integers(0, 9))
def test_encoded_images_come_back_whole(tmp_path_factory, capfd, suffix, width, height, seed):
    data = encoded(suffix, width, height, seed)
    assert image_size(data) == (width, height)
    tmp = tmp_path_factory.mktemp("image")
    if max(width, height) > MAX_ASPECT * min(width, height):
        assert reads_or_refuses(tmp, data, capfd) is None
    else:
        assert reads_or_refuses(tmp, data, capfd).shape[:2] == (height, width)


@with_capfd
@given(
    st.sampled_from(SUFFIXES).flatmap(lambda s: mutated(encoded(s, 40, 30, 0))),
)
def test_damaged_images(tmp_path_factory, capfd, data):
    reads_or_refuses(tmp_path_factory.mktemp("image"), data, capfd)


@with_capfd
@given(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), st.integers(0, 4))
def test_headers_claiming_any_size(tmp_path_factory, capfd, width, height, which):
    data = headers(width, height)[which]
    reads_or_refuses(tmp_path_factory.mktemp("image"), data, capfd)


@with_capfd
@given(st.binary(max_size=300))
def test_any_bytes(tmp_path_factory, capfd, data):
    reads_or_refuses(tmp_path_factory.mktemp("image"), data, capfd)
