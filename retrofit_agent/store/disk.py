"""What the queue does about a full disk: keep a reserve, make room on SQLITE_FULL, pause the
seq reservations, and say so without flooding the journal.

- Reserve: the database file only grows into free space beyond `min_free_bytes` (`byte_limit`),
  so it never fills the disk; on a full disk SQLite may not even manage the deletes that would
  make room.
- SQLITE_FULL is not fatal: the transaction is rolled back, the queue makes room (it evicts a
  chunk of rows in its own order) and the work is tried again; after FULL_RETRIES rounds it is
  given up (the queue drops the batch and counts it), never retried forever.
- A seq reservation that failed is not tried again for FULL_COOLDOWN_S: every frame would
  otherwise attempt a write that the disk has no room for.
- A full disk may last hours: it is logged at most once every FULL_LOG_INTERVAL_S.
Nothing else is remembered, so the queue grows again by itself once space is freed.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from retrofit_agent.common.logs import kv

log = logging.getLogger(__name__)

FULL_RETRIES = 3  # make-room rounds before the work is given up
FULL_COOLDOWN_S = 5.0  # after a failed seq reservation, the next try waits this long
FULL_LOG_INTERVAL_S = 60.0


def is_full(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite failed for want of space (SQLITE_FULL: the disk, or max_page_count)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class DiskPolicy:
    """The full-disk policy of the database at `path`; `clock` is time.monotonic's stand-in."""

    def __init__(
        self, path: Path, min_free_bytes: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path)
        self.min_free_bytes = min_free_bytes
        self.full_events = 0  # SQLITE_FULL answered by making room
        self._clock = clock
        self._reserve_after = -math.inf  # no seq reservation is tried before this
        self._reported_at = -math.inf

    def byte_limit(self, max_bytes: int) -> int:
        """`max_bytes`, less where the filesystem is short: the file's size plus what the
        filesystem can spare beyond `min_free_bytes`."""
        fs = os.statvfs(self.path.parent)
        spare = fs.f_bavail * fs.f_frsize - self.min_free_bytes
        return min(max_bytes, self.path.stat().st_size + max(0, spare))

    def write(self, attempt: Callable[[], bool], make_room: Callable[[], None]) -> bool:
        """`attempt()` (one transaction: True once committed, False when rolled back on
        SQLITE_FULL) until it commits, with `make_room()` between tries; False if it never fit."""
        for round_ in range(FULL_RETRIES + 1):
            if attempt():
                return True
            if round_ < FULL_RETRIES:
                self.full_events += 1
                make_room()
        return False

    def may_reserve(self) -> bool:
        """False during the cool-down after a failed seq reservation."""
        return self._clock() >= self._reserve_after

    def reservation_failed(self) -> None:
        self._reserve_after = self._clock() + FULL_COOLDOWN_S

    def report(self, message: str, **context: object) -> None:
        """A warning about the full disk, unless one was logged in the last interval."""
        now = self._clock()
        if now - self._reported_at >= FULL_LOG_INTERVAL_S:
            self._reported_at = now
            log.warning(message, extra=kv(path=self.path, **context))
