"""The uploader's daily byte budget, counted in the queue's database so a restart cannot reset it.

Request bodies count per UTC day; only the current day is kept (`upload_day` and
`upload_spent` in the meta table), so the record stays two values however long the camera runs.
The uploader adds a body before it sends it: a crash mid-request cannot hide bytes that may have
left over a metered link.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from retrofit_agent.common.sqlite import immediate
from retrofit_agent.errors import StoreError
from retrofit_agent.store.database import Meta


class UploadBudget:
    """Bytes uploaded per UTC day (an ISO date such as "2026-11-29"), on the connection `db`
    to the queue at `path` (for messages)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._meta = Meta(db)

    def spent(self, day: str) -> int:
        """Bytes uploaded on `day`: 0 for any day but the last one recorded."""
        if self._meta.get("upload_day", "") != day:
            return 0
        return int(self._meta.get("upload_spent", 0))

    def add(self, day: str, nbytes: int) -> None:
        """Count `nbytes` on `day`; a new day starts from 0."""
        try:
            with immediate(self.db):
                spent = self.spent(day) + nbytes
                self._meta.set("upload_day", day)
                self._meta.set("upload_spent", spent)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot record upload bytes: {exc}") from None
