"""The one write transaction for SQLite connections in autocommit mode (isolation_level=None).

BEGIN IMMEDIATE takes the write lock first. A deferred transaction that reads before it writes
fails at once with "database is locked" when another connection committed in between (the
service's uploader writes through its own); an immediate one waits for the lock (the busy
timeout) instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """Commit what the block did, or roll it all back if it (or the COMMIT) raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:  # the work or the COMMIT itself (SQLITE_FULL) failed
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
