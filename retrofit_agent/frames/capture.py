"""Frame sources through OpenCV: a V4L2 camera, a video file or a folder of images.

Decoding runs on a reader thread so it overlaps inference. A live camera (and a file read at its
native rate) keeps only the newest frame: a slow pipeline drops frames, it never builds a
backlog. A file read as fast as possible delivers every frame through a small bounded queue.
The ways a source stops are distinct: a clean end (iteration stops), an unreadable input
(SourceError at open), a truncated file (SourceTruncated) and a vanished or stalled camera
(DeviceLost); a stall is detected by timeout, never waited on forever. A file is truncated when
it ends inside its container's declared structure (frames.container), not when it delivers
fewer frames than the container counts: zero-length "repeat" entries count but decode to
nothing. Frames too large for memory are refused before they are decoded (frames.images), and
an input that is neither a regular file, a folder nor a camera (a FIFO would block the open
forever) is refused at once.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from retrofit_agent.common.files import file_kind
from retrofit_agent.config import DEFAULT_MAX_PIXELS
from retrofit_agent.errors import DeviceLost, SourceError, SourceTruncated
from retrofit_agent.frames import container
from retrofit_agent.frames.images import check_frame_size, read_image

# FFmpeg and OpenCV print decoder chatter on stderr; the agent reports errors itself.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
PREFETCH = 1  # frames decoded ahead of inference when every frame is wanted


def is_corrupt(image: object) -> bool:
    """What the pipeline cannot take (a camera's broken frame): anything but a non-empty
    8-bit, 3-channel image."""
    return not (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype == np.uint8
        and image.size > 0
    )


class Prepared(NamedTuple):
    """A frame's model input and `spec`, what made it (the consumer checks it still applies)."""

    input: np.ndarray
    spec: Hashable


# Turns a decoded image into the model's input, writing into `spare` (an input the consumer is
# done with) when given: run on the reader thread, so the inference thread only infers.
Prepare = Callable[[np.ndarray, np.ndarray | None], Prepared]


@dataclass(frozen=True)
class Frame:
    """A decoded BGR frame, its position in the source and when it was read.

    With a `prepare`, `prepared` is the model's input made on the reader thread, which took
    `prepare_ms`; it is recycled together with `image`.
    """

    image: np.ndarray
    index: int
    captured_utc: datetime
    prepared: Prepared | None = None
    prepare_ms: float = 0.0


class FrameReader:
    """Calls `read` on its own thread until it returns None (the source's end) or raises.

    `keep_all` delivers every frame in order through a queue of `capacity`, blocking the reader
    when full; otherwise only the newest frame is kept and overwritten ones are counted in
    `dropped`. `interval_s` paces reads (a file played at its native rate). `prepare` makes
    each frame's model input on this thread (also for frames that are dropped later).
    `release` runs on the reader thread once it stops reading, so a capture is never released
    under a read that is still blocked in the driver (a stalled camera), whatever close()'s
    timeout.

    Frames are recycled: `read` gets a spare image (one the consumer is done with, or None) to
    decode into and `prepare` a spare input, so a steady stream allocates no frame memory. The
    consumer is done with a frame when it asks for the next one; one overwritten unread is
    spare at once.
    """

    def __init__(
        self,
        read: Callable[[np.ndarray | None], np.ndarray | None],
        keep_all: bool,
        capacity: int = PREFETCH,
        interval_s: float = 0.0,
        prepare: Prepare | None = None,
        release: Callable[[], object] | None = None,
    ) -> None:
        self._read = read
        self._prepare = prepare
        self._release = release
        self._keep_all = keep_all
        self._capacity = capacity if keep_all else 1
        self._interval_s = interval_s
        self._frames: deque[Frame] = deque()
        self._handed: Frame | None = None  # the consumer's current frame
        self._spares: list[Frame] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._finished = False
        self._error: BaseException | None = None
        self.read_count = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        try:
            while not self._stopping:
                if self._interval_s:
                    time.sleep(max(0.0, due - time.monotonic()))
                    due += self._interval_s
                with self._cond:
                    if self._keep_all:  # read only into a free place: no frame waits here
                        self._cond.wait_for(
                            lambda: len(self._frames) < self._capacity or self._stopping
                        )
                        if self._stopping:
                            break
                    spare = self._spares.pop() if self._spares else None
                image = self._read(spare.image if spare else None)
                if image is None:
                    break
                frame = self._frame(image, spare)
                with self._cond:
                    if not self._keep_all and self._frames:
                        self._spares.append(self._frames.popleft())
                        self.dropped += 1
                    self._frames.append(frame)
                    self.read_count += 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, who re-raises it
            self._error = exc
        finally:
            if self._release is not None:
                self._release()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _frame(self, image: np.ndarray, spare: Frame | None) -> Frame:
        captured = datetime.now(UTC)
        if self._prepare is None or is_corrupt(image):  # the consumer decides what to do
            return Frame(image, self.read_count, captured)
        start = time.perf_counter()
        prepared = self._prepare(image, spare.prepared.input if spare and spare.prepared else None)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        return Frame(image, self.read_count, captured, prepared, elapsed_ms)

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None once the source has ended; TimeoutError if none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames or self._finished, timeout):
                raise TimeoutError
            if self._handed is not None:
                self._spares.append(self._handed)
            self._handed = self._frames.popleft() if self._frames else None
            if self._handed is not None:
                self._cond.notify_all()
                return self._handed
            if self._error is not None:
                raise self._error
            return None

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)


class FrameSource:
    """Iterate to get frames; a frame's image stays valid until the next one is requested."""

    name: str
    total: int | None = None  # frames expected, when the source knows
    _reader: FrameReader

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self._next()) is not None:
            yield frame
        self._finish()

    def _next(self) -> Frame | None:
        return self._reader.get()

    def _finish(self) -> None:
        """Called after the last frame: raise if the end was not a clean one."""

    @property
    def dropped(self) -> int:
        return self._reader.dropped

    def clock_s(self, frame: Frame) -> float:
        """When `frame` was taken, in seconds on this source's clock: its capture time."""
        return frame.captured_utc.timestamp()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """A video file, decoded as fast as possible or paced at its native frame rate.

    `loop` starts again at the first frame after the last, endlessly: a recorded drive stands
    in for a live camera (bench tests of the service, soak runs).
    """

    def __init__(
        self,
        path: Path,
        realtime: bool = False,
        loop: bool = False,
        prepare: Prepare | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.name = str(path)
        self._path = path
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        try:
            if self._capture.isOpened():  # the stream's size is known before a frame decodes
                width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
                height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
                if width > 0 and height > 0:
                    check_frame_size(path, width, height, max_pixels)
            ok, first = self._capture.read() if self._capture.isOpened() else (False, None)
        except BaseException:
            self._capture.release()
            raise
        if not ok:
            self._capture.release()
            raise SourceError(f"{path}: not a readable video (no decodable frame)")
        declared = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = declared if declared > 0 and not loop else None
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        pending = [first]

        def read(spare: np.ndarray | None) -> np.ndarray | None:
            if pending:
                return pending.pop()
            ok, image = self._capture.read(spare)
            if not ok and loop and self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                ok, image = self._capture.read(spare)
            return image if ok else None

        interval = 1.0 / self.fps if realtime and self.fps > 0 else 0.0
        self._reader = FrameReader(
            read, not realtime, interval_s=interval, prepare=prepare, release=self._capture.release
        )
        self._own_clock = not realtime and self.fps > 0

    def clock_s(self, frame: Frame) -> float:
        """A file read as fast as possible keeps its own timeline (frame index / frame rate),
        so the keep policy decides as it would on a camera at the file's rate."""
        return frame.index / self.fps if self._own_clock else super().clock_s(frame)

    def _finish(self) -> None:
        read = self._reader.read_count
        if self.total and read < self.total and container.truncated(self._path):
            raise SourceTruncated(
                f"{self.name}: video ends after {read} of {self.total} frames "
                "(the file is shorter than its container says: truncated)"
            )


class ImageFolderSource(FrameSource):
    """Every image in a folder, in name order; an unreadable image is an error naming it."""

    def __init__(
        self, path: Path, prepare: Prepare | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self.name = str(path)
        files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.total = len(files)
        pending = deque(files)

        def read(_spare: np.ndarray | None) -> np.ndarray | None:
            return read_image(pending.popleft(), max_pixels) if pending else None

        self._reader = FrameReader(read, keep_all=True, prepare=prepare)


class CameraSource(FrameSource):
    """A live camera; only the newest frame is kept, and a stall or read failure is DeviceLost.

    `capture` is an opened cv2.VideoCapture (or anything with its read/release methods).
    """

    def __init__(
        self,
        capture: cv2.VideoCapture,
        name: str,
        stall_timeout_s: float = 5.0,
        prepare: Prepare | None = None,
    ) -> None:
        self.name = name
        self.stall_timeout_s = stall_timeout_s

        def read(spare: np.ndarray | None) -> np.ndarray | None:
            ok, image = capture.read(spare)
            return image if ok else None

        self._reader = FrameReader(read, keep_all=False, prepare=prepare, release=capture.release)

    def _next(self) -> Frame | None:
        try:
            frame = self._reader.get(timeout=self.stall_timeout_s)
        except TimeoutError:
            raise DeviceLost(f"{self.name}: no frame for {self.stall_timeout_s:g} s") from None
        if frame is None:
            raise DeviceLost(f"{self.name}: camera stopped delivering frames (vanished?)")
        return frame


def open_camera(
    device: str | int,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    stall_timeout_s: float = 5.0,
    prepare: Prepare | None = None,
) -> CameraSource:
    """Open a V4L2 device (`/dev/videoN` or an index) and request a resolution and rate."""
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        raise SourceError(f"{device}: cannot open camera (missing device or no permission)")
    for prop, value in (
        (cv2.CAP_PROP_FRAME_WIDTH, width),
        (cv2.CAP_PROP_FRAME_HEIGHT, height),
        (cv2.CAP_PROP_FPS, fps),
    ):
        if value:
            capture.set(prop, value)
    return CameraSource(capture, str(device), stall_timeout_s, prepare)


def open_source(
    source: str | int | Path,
    realtime: bool = False,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    stall_timeout_s: float = 5.0,
    loop: bool = False,
    prepare: Prepare | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FrameSource:
    """Pick the source type: a device index, /dev/video* or another character device, a
    folder, a regular file (a video); anything else is refused without opening it.

    `prepare` (e.g. Preprocessor.prepare) makes each frame's model input on the reader thread.
    Frames of more than `max_pixels` are refused before they are decoded.
    """
    if isinstance(source, int) or str(source).isdigit() or str(source).startswith("/dev/video"):
        device = int(source) if str(source).isdigit() else str(source)
        return open_camera(device, width, height, fps, stall_timeout_s, prepare)
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror}") from None
    if stat.S_ISCHR(mode):  # a camera's node by another name (/dev/v4l/by-id/...)
        return open_camera(str(path), width, height, fps, stall_timeout_s, prepare)
    if stat.S_ISDIR(mode):
        return ImageFolderSource(path, prepare, max_pixels)
    if not stat.S_ISREG(mode):
        raise SourceError(f"{path}: {file_kind(mode)}, not a video file, a folder or a camera")
    return VideoFileSource(path, realtime, loop, prepare, max_pixels)
