"""A stand-in V4L2 camera whose faults a test switches on and off, for the real service process.

    python tests/fake_camera.py CUE_DIR run --config FILE

runs the real `retrofit-agent` command line in this process with cv2.VideoCapture replaced
for devices named /dev/video-fake*; everything else (CameraSource's reader thread and stall
detection, the supervisor, the service) is the production code. The camera delivers synthetic
160x120 frames at FAKE_CAMERA_FPS (default 25) and obeys files in CUE_DIR while it runs:

    absent    the device is gone: opening fails, reads fail
    stall     reads block: the camera stops delivering without an error
    corrupt   reads "succeed" with an empty frame

and appends a line to CUE_DIR/opens for each successful open.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

FAKE_PREFIX = "/dev/video-fake"
STALL_LIMIT_S = 60.0  # a forgotten cue cannot hang a test run forever


class FakeCapture:
    def __init__(self, cues: Path, fps: float) -> None:
        self.cues = cues
        self.interval = 1.0 / fps
        self.released = False
        self.opened = not (cues / "absent").exists()
        self.count = 0
        self.due = time.monotonic()
        if self.opened:
            with open(cues / "opens", "a") as f:
                f.write("open\n")

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self, image: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
        deadline = time.monotonic() + STALL_LIMIT_S
        while (self.cues / "stall").exists() and not self.released and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.released or not self.opened or (self.cues / "absent").exists():
            return False, None
        time.sleep(max(0.0, self.due - time.monotonic()))
        self.due = max(self.due + self.interval, time.monotonic() - self.interval)
        if (self.cues / "corrupt").exists():
            return True, np.zeros((0, 0, 3), np.uint8)
        self.count += 1
        return True, np.full((120, 160, 3), self.count % 256, np.uint8)

    def release(self) -> None:
        self.released = True


def install(cues: Path, fps: float) -> None:
    real = cv2.VideoCapture

    def video_capture(source: object, *args: object) -> object:
        if str(source).startswith(FAKE_PREFIX):
            return FakeCapture(cues, fps)
        return real(source, *args)

    cv2.VideoCapture = video_capture


if __name__ == "__main__":
    install(Path(sys.argv[1]), float(os.environ.get("FAKE_CAMERA_FPS", "25")))
    from retrofit_agent.cli import main

    sys.exit(main(sys.argv[2:]))
