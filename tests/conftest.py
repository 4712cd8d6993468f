"""Shared fixtures: tiny bundles built in the session, synthetic and real footage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.paths import REAL_VIDEO, ROAD_IMAGES


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete bundle (64 px input, 32-d embedding); never modify it, use bundle_copy.

    RETROFIT_TINY_BUNDLE names one built beforehand: the camera (and its emulation) has no
    onnx to build one, and parity across architectures needs the very same files.
    """
    if prebuilt := os.environ.get("RETROFIT_TINY_BUNDLE"):
        return Path(prebuilt)
    from helpers.bundle_factory import build_bundle  # needs onnx, a dev-only dependency

    return build_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory):
    """A random-weight tiny CLIP (OpenCLIP config + checkpoint); skips without [distill]."""
    pytest.importorskip("open_clip", reason="needs the [distill] extra")
    from helpers.distill import make_teacher

    return make_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def real_video() -> Path:
    if not REAL_VIDEO.is_file():
        pytest.skip(f"real footage not found at {REAL_VIDEO} (../shared is absent)")
    return REAL_VIDEO


@pytest.fixture(scope="session")
def road_images() -> Path:
    if not ROAD_IMAGES.is_dir():
        pytest.skip(f"road images not found at {ROAD_IMAGES} (../shared is absent)")
    return ROAD_IMAGES


def write_video(path: Path, frames: int = 40, size: tuple[int, int] = (320, 240)) -> Path:
    """A Motion-JPEG AVI whose frame i has mean brightness ~ 5 * i (so order is checkable)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    for i in range(frames):
        image = np.full((size[1], size[0], 3), 5 * i, np.uint8)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "synthetic.avi")


@pytest.fixture(scope="session")
def truncated_video(synthetic_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = synthetic_video.read_bytes()
    path = tmp_path_factory.mktemp("video") / "truncated.avi"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def not_a_video(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file with a video's name\n" * 50)
    return path
