"""Images refused by their size before they are decoded, read within bounds, and what their
decoders write to stderr kept inside the one-line error."""

import os

import cv2
import numpy as np
import pytest
from helpers.cli import agent, error_line
from helpers.png import SHORT_ICCP, black_png, claiming, with_bad_idat_crc

from retrofit_agent.errors import SourceError
from retrofit_agent.frames.images import read_image
from retrofit_agent.frames.imagesize import image_size

pytestmark = pytest.mark.device

TWO_GIB = 2 << 30


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (31, 7), (640, 480), (300, 1000)])
def test_the_header_gives_the_size_opencv_decodes(suffix, width, height):
    image = np.random.default_rng(width).integers(0, 255, (height, width, 3), np.uint8)
    data = cv2.imencode(suffix, image)[1].tobytes()
    assert image_size(data) == (width, height)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a....", "not a PNG, JPEG, BMP, WebP or TIFF image"),
        (black_png(30, 20)[:20], "the header ends early"),
        (b"\xff\xd8\xff\xda\x00\x02", "JPEG without a frame header"),
        (black_png(0, 20), "header says 0x20 pixels"),
    ],
)
def test_headers_that_say_nothing_usable(data, message):
    with pytest.raises(ValueError, match=message):
        image_size(data)


def test_the_pixel_bound_is_checked_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(black_png(20000, 20000))  # 1.2 MB, 1.2 GB decoded
    with pytest.raises(
        SourceError,
        match=r"big\.png: 20000x20000 is 400000000 pixels, more than capture\.max_pixels",
    ):
        read_image(big, max_pixels=1 << 25)
    small = tmp_path / "small.png"
    small.write_bytes(black_png(30, 20))
    assert read_image(small, max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(SourceError, match=r"30x20 is 600 pixels, more than .* \(599\)"):
        read_image(small, max_pixels=599)


def test_a_thin_image_is_refused_its_resize_would_not_fit(tmp_path):
    thin = tmp_path / "thin.png"
    thin.write_bytes(black_png(1_000_000, 1))  # resized for a 64 px student: 12 GB
    with pytest.raises(SourceError, match=r"1000000x1 is more than 16 times as long as it is wide"):
        read_image(thin, max_pixels=1 << 25)


def test_an_oversized_file_and_a_fifo_are_refused_without_reading_them(tmp_path):
    padded = tmp_path / "padded.png"
    padded.write_bytes(black_png(2, 2) + bytes(4 * 4 + (1 << 20)))
    with pytest.raises(SourceError, match=r"padded\.png: image larger than 1048592 bytes"):
        read_image(padded, max_pixels=4)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=r"fifo\.png: image is a named pipe \(FIFO\)"):
        read_image(fifo, max_pixels=100)


def folder(tmp_path, name, data):
    images = tmp_path / "images"
    images.mkdir()
    (images / name).write_bytes(data)
    return images


def test_dry_run_refuses_a_small_png_with_huge_dimensions(tiny_bundle, tmp_path):
    """Before: the dry run decoded it, peaking at 2.4 GB (here it runs in 2 GiB of address
    space, so decoding would fail) and exited 0."""
    images = folder(tmp_path, "big.png", black_png(20000, 20000))
    result = agent(
        "--dry-run", images, "--model", tiny_bundle, "--no-publish", memory_limit=TWO_GIB
    )
    assert result.returncode == 66
    assert "big.png: 20000x20000 is 400000000 pixels, more than capture.max_pixels" in (
        error_line(result)
    )


def test_dry_run_refuses_an_image_beyond_opencvs_own_limit(tiny_bundle, tmp_path):
    """Over 2^30 pixels OpenCV raised cv2.error from the reader thread: a traceback."""
    images = folder(tmp_path, "huge.png", claiming(40000, 30000))
    result = agent("--dry-run", images, "--model", tiny_bundle, "--no-publish")
    assert result.returncode == 66
    assert "huge.png: 40000x30000 is 1200000000 pixels" in error_line(result)


def test_the_bound_is_capture_max_pixels_of_the_config(tiny_bundle, tmp_path):
    images = folder(tmp_path, "small.png", black_png(30, 20))
    config = tmp_path / "agent.toml"
    config.write_text("[capture]\nmax_pixels = 599\n")
    args = ("--dry-run", images, "--model", tiny_bundle, "--no-publish", "--config", config)
    result = agent(*args)
    assert result.returncode == 66
    assert "small.png: 30x20 is 600 pixels, more than capture.max_pixels (599)" in (
        error_line(result)
    )
    config.write_text("[capture]\nmax_pixels = 600\n")
    assert "frames   1 processed" in agent(*args, check_ok=True).stdout


def test_libpng_messages_stay_inside_the_one_line_error(tiny_bundle, tmp_path):
    """libpng wrote `libpng error: IDAT: CRC error` on a line of its own before the error."""
    images = folder(tmp_path, "a.png", with_bad_idat_crc(black_png(30, 20)))
    result = agent("--dry-run", images, "--model", tiny_bundle, "--no-publish")
    assert result.returncode == 66
    assert error_line(result).endswith(
        "a.png: not a readable image (libpng error: IDAT: CRC error)"
    )
    assert "libpng" not in result.stderr.replace(error_line(result), "")


def test_libpng_warnings_about_an_image_that_decodes_are_not_printed(tiny_bundle, tmp_path):
    images = folder(tmp_path, "a.png", black_png(30, 20, before_idat=SHORT_ICCP))
    result = agent("--dry-run", images, "--model", tiny_bundle, "--no-publish", check_ok=True)
    assert "frames   1 processed" in result.stdout
    assert "libpng" not in result.stderr, result.stderr
