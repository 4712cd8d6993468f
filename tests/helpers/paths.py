"""Where the repository and the real footage of ../shared are."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
SHARED = Path(os.environ.get("RETROFIT_SHARED", REPO.parent / "shared"))
REAL_VIDEO = SHARED / "data" / "video" / "solidWhiteRight.mp4"
ROAD_IMAGES = SHARED / "data" / "images" / "road"
