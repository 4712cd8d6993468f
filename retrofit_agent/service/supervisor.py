"""The camera watchdog: a live source that stays open through faults, without a restart.

A device that vanishes (a read fails), stalls (no frame within `stall_timeout_s`: CameraSource
raises DeviceLost) or delivers corrupt frames (`max_corrupt_frames` in a row) is closed and
reopened after an exponential backoff with jitter, for as long as it takes. Faults, reopen
attempts and frames are counted for the metrics and every state change is logged. The wait
between attempts is the service's: it returns False once the service is stopping, which ends
the frames, so a SIGTERM never waits out a backoff.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from retrofit_agent.common.backoff import Backoff
from retrofit_agent.common.logs import kv
from retrofit_agent.errors import SourceError
from retrofit_agent.frames.capture import Frame, FrameSource, is_corrupt

log = logging.getLogger(__name__)


class SupervisedSource(FrameSource):
    """Frames from `first`, then from `reopen()` after each fault; ends when `wait` says stop.

    `wait(seconds)` sleeps (0: only checks) and returns False once the service is stopping.
    """

    def __init__(
        self,
        first: FrameSource,
        reopen: Callable[[], FrameSource],
        backoff: Backoff,
        max_corrupt_frames: int,
        wait: Callable[[float], bool],
    ) -> None:
        self.name = first.name
        self.backoff = backoff
        self.max_corrupt_frames = max_corrupt_frames
        self._reopen = reopen
        self._wait = wait
        self._source: FrameSource | None = first
        self._frames = iter(first)
        self._corrupt_in_a_row = 0
        self._dropped_before = 0  # frames dropped by sources already closed
        self._down_since = 0.0
        self.faults: Counter[str] = Counter()  # lost, corrupt, open_failed
        self.reconnects = 0
        self.corrupt_frames = 0

    @property
    def up(self) -> bool:
        return self._source is not None

    @property
    def dropped(self) -> int:
        return self._dropped_before + (self._source.dropped if self._source else 0)

    def _next(self) -> Frame | None:
        while self._wait(0):
            if self._source is None and not self._reconnect():
                return None
            try:
                frame = next(self._frames, None)
            except SourceError as exc:
                self._fault("lost", str(exc))
                continue
            if frame is None:  # a video file that ended (not looped): the run is over
                return None
            if is_corrupt(frame.image):
                self.corrupt_frames += 1
                self._corrupt_in_a_row += 1
                if self._corrupt_in_a_row >= self.max_corrupt_frames:
                    self._fault("corrupt", f"{self._corrupt_in_a_row} corrupt frames in a row")
                continue
            self._corrupt_in_a_row = 0
            self.backoff.reset()
            return frame
        return None

    def _fault(self, kind: str, reason: str) -> None:
        self.faults[kind] += 1
        self._close_source()
        self._down_since = time.monotonic()
        log.warning("camera fault", extra=kv(source=self.name, fault=kind, reason=reason))

    def _reconnect(self) -> bool:
        """Reopen with backoff until it works (True) or the service stops (False)."""
        while True:
            delay = self.backoff.next_delay()
            log.debug(
                "reopening camera",
                extra=kv(source=self.name, attempt=self.backoff.attempts, in_s=delay),
            )
            if not self._wait(delay):
                return False
            try:
                source = self._reopen()
            except SourceError as exc:
                self.faults["open_failed"] += 1
                log.warning(
                    "cannot reopen camera",
                    extra=kv(source=self.name, attempt=self.backoff.attempts, error=exc),
                )
                continue
            self._source, self._frames = source, iter(source)
            self._corrupt_in_a_row = 0
            self.reconnects += 1
            down_s = time.monotonic() - self._down_since
            log.info(
                "camera reopened",
                extra=kv(source=self.name, attempts=self.backoff.attempts, down_s=down_s),
            )
            return True

    def _close_source(self) -> None:
        if self._source is not None:
            self._dropped_before += self._source.dropped
            self._source.close()
            self._source = None

    def close(self) -> None:
        self._close_source()
