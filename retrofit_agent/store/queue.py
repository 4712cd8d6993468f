"""The local observation queue: SQLite in WAL mode, through the standard library's sqlite3.

- Rows are buffered and committed in batches (`commit_every` rows or `commit_interval_s`),
  so an SD card sees one fsync per batch, not one per frame. A committed row is acknowledged:
  with `synchronous=FULL` (the default) it survives kill -9 and power loss.
- `seq` is monotonic per device and never reused, also across restarts and evictions: blocks of
  SEQ_BLOCK numbers are reserved in the `meta` table before they are handed out, so a crash
  leaves a gap, never a duplicate `(device_id, seq)`.
- Bound and eviction order: after each batch, while the table holds more than `max_rows` rows
  or its used pages exceed `max_bytes` (or what the filesystem can spare beyond
  `min_free_bytes`), rows are deleted oldest uploaded first, then oldest pending. Insert and
  eviction share one transaction. Freed pages are reused, so the file stays near its bound;
  `retrofit-agent queue vacuum` returns the space to the filesystem.
- A full disk (SQLITE_FULL) is not fatal: the batch is rolled back, a chunk of rows is evicted
  in the order above and the batch retried; a batch that still does not fit after
  FULL_RETRIES rounds is dropped and counted, never retried forever; while no block of seqs
  can be reserved, allocate_seq raises StoreFull (the frame is skipped). Nothing is
  remembered, so the queue grows again once space is freed; a full disk is logged at most
  once a minute. Every committed batch is logged at debug level
  (`committed rows= first_seq= last_seq=`): that line is the acknowledgement.
- Quarantined rows (refused for good by the ingest server) count as not uploaded: they are
  evicted together with pending rows, oldest first, and stay for diagnosis as long as those.
- Upload state: rows leave `pending` only through `set_state` (transport.upload calls it after
  the server's acknowledgement), so a crash re-sends instead of losing.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from retrofit_agent.common.logs import kv
from retrofit_agent.common.sqlite import immediate
from retrofit_agent.config import StoreConfig
from retrofit_agent.errors import StoreError, StoreFull
from retrofit_agent.observation import Observation

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SEQ_BLOCK = 1000
PENDING = "pending"
UPLOADED = "uploaded"
QUARANTINED = "quarantined"
EVICT_CHUNK = 256  # rows deleted per step while over the byte bound
FULL_RETRIES = 3  # evict-and-retry rounds before a batch that does not fit is dropped
FULL_COOLDOWN_S = 5.0  # after a failed seq reservation, the next try waits this long
FULL_LOG_INTERVAL_S = 60.0  # a full disk is logged at most this often (it may last hours)
# SQLite's own page cache per connection (its default is 2 MiB): the queue appends and reads
# rows once, so the OS page cache serves as well; 256 KiB keeps the agent's RSS down.
CACHE_KIB = 256
# The tables as sqlite-utils created them before (plain sqlite3 saves ~3 MiB of agent RSS).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS observations (seq INTEGER PRIMARY KEY, "
    "device_id TEXT NOT NULL, captured_utc TEXT NOT NULL, state TEXT NOT NULL, "
    "header TEXT NOT NULL, embedding BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idx_observations_state_seq ON observations (state, seq)",
)
INSERT = (
    "INSERT INTO observations (seq, device_id, captured_utc, state, header, embedding) "
    "VALUES (:seq, :device_id, :captured_utc, :state, :header, :embedding)"
)


class Store:
    """Append observations, bound the table, and report on it."""

    def __init__(
        self,
        path: Path,
        max_rows: int = 1_000_000,
        max_bytes: int = 2 * 1024**3,
        commit_every: int = 30,
        commit_interval_s: float = 1.0,
        synchronous: str = "FULL",
        min_free_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._pending: list[dict[str, Any]] = []
        self._oldest_pending_at = 0.0
        self.evicted = 0
        self.disk_full = 0  # SQLITE_FULL events
        self.dropped = 0  # rows that did not fit even after eviction
        self._full_until = 0.0  # no seq reservation is tried before this (monotonic)
        self._full_logged_at = -FULL_LOG_INTERVAL_S
        try:
            # autocommit: transactions are explicit (_immediate), never opened behind our back
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._create_schema()
            self._rows = self._count()
            self._next_seq = self._reserved = int(self._meta("seq_reserved", 1))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open observation database: {exc}") from None

    @classmethod
    def open_existing(cls, path: Path, **bounds: Any) -> Store:
        """Open a database that must already exist (for the `queue` commands)."""
        if not Path(path).is_file():
            raise StoreError(f"{path}: no such observation database")
        return cls(path, **bounds)

    def _count(self) -> int:
        return self.db.execute("SELECT count(*) FROM observations").fetchone()[0]

    def _create_schema(self) -> None:
        with immediate(self.db):
            for statement in SCHEMA:
                self.db.execute(statement)
            version = int(self._meta("schema_version", SCHEMA_VERSION))
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, this agent reads {SCHEMA_VERSION}"
                )
            if self._meta("schema_version", "") == "":  # a new database: no write otherwise
                self._set_meta("schema_version", SCHEMA_VERSION)

    def _meta(self, key: str, default: Any) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else str(default)

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, str(value)],
        )

    def allocate_seq(self) -> int:
        """The next sequence number; reserves a new block (one small commit) when needed.

        StoreFull if the disk is too full to record the reservation (tried again after
        FULL_COOLDOWN_S): a number that is not reserved on disk could be reused after a crash.
        """
        if self._next_seq >= self._reserved:
            reserved = self._next_seq + SEQ_BLOCK
            full = StoreFull(f"{self.path}: disk full, cannot reserve sequence numbers")
            if time.monotonic() < self._full_until:
                raise full
            if not self._write(lambda: self._set_meta("seq_reserved", reserved)):
                self._full_until = time.monotonic() + FULL_COOLDOWN_S
                raise full
            self._reserved = reserved
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def add(self, observation: Observation, header: bytes) -> None:
        """Queue a row (`header`: its JSON without the embedding); committed with its batch."""
        if not self._pending:
            self._oldest_pending_at = time.monotonic()
        self._pending.append(
            {
                "seq": observation.seq,
                "device_id": observation.device_id,
                "captured_utc": observation.captured_utc.isoformat(),
                "state": PENDING,
                "header": header.decode(),
                "embedding": observation.embedding,
            }
        )
        if (
            len(self._pending) >= self.commit_every
            or time.monotonic() - self._oldest_pending_at >= self.commit_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        """Commit buffered rows and enforce the bound, in one transaction."""
        if not self._pending:
            return
        if self._write(self._insert_pending):
            first, last = self._pending[0]["seq"], self._pending[-1]["seq"]
            log.debug(
                "committed", extra=kv(rows=len(self._pending), first_seq=first, last_seq=last)
            )
        else:
            self.dropped += len(self._pending)
            self._log_full("disk full, nothing left to evict: observations not stored")
        self._pending.clear()

    def _insert_pending(self) -> None:
        limit = self._byte_limit()
        self.db.executemany(INSERT, self._pending)
        self._rows += len(self._pending)
        self._evict(limit)

    def _write(self, work: Callable[[], None]) -> bool:
        """Run `work` in a transaction, making room on SQLITE_FULL; False if it never fit."""
        for attempt in range(FULL_RETRIES + 1):
            if self._transaction(work, "write observations"):
                return True
            if attempt < FULL_RETRIES:
                self._make_room()
        return False

    def _make_room(self) -> None:
        """After SQLITE_FULL: evict a chunk of rows in the usual order, in its own transaction
        (which may fail as well: then the retry fails and the batch is dropped)."""
        self.disk_full += 1
        before = self._rows
        count = min(self._rows, max(EVICT_CHUNK, 2 * len(self._pending)))
        self._transaction(lambda: self._delete_oldest(count), "evict observations")
        self._log_full("disk full: evicted the oldest rows to make room", before - self._rows)

    def _transaction(self, work: Callable[[], None], what: str) -> bool:
        """`work` committed (True), or rolled back on SQLITE_FULL (False); StoreError else."""
        evicted = self.evicted
        try:
            with immediate(self.db):
                work()
        except sqlite3.DatabaseError as exc:  # rolled back: so are the counts
            self._rows, self.evicted = self._count(), evicted
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise StoreError(f"{self.path}: cannot {what}: {exc}") from None
            return False
        return True

    def _log_full(self, message: str, evicted: int = 0) -> None:
        now = time.monotonic()
        if now - self._full_logged_at >= FULL_LOG_INTERVAL_S:
            self._full_logged_at = now
            context = kv(path=self.path, evicted=evicted, rows=self._rows, dropped=self.dropped)
            log.warning(message, extra=context)

    def size(self) -> tuple[int, int]:
        """Rows and used bytes, without a table scan (cheap enough for every metrics snapshot)."""
        return self._rows, self._used_bytes()

    def _used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _byte_limit(self) -> int:
        """`max_bytes`, less where the filesystem is short: the database file only grows into
        free space beyond `min_free_bytes`, so it never fills the disk (on a full disk SQLite
        may not even manage the deletes that would make room)."""
        fs = os.statvfs(self.path.parent)
        spare = fs.f_bavail * fs.f_frsize - self.min_free_bytes
        return min(self.max_bytes, self.path.stat().st_size + max(0, spare))

    def _evict(self, limit: int) -> None:
        if self._rows > self.max_rows:
            self._delete_oldest(self._rows - self.max_rows)
        while self._rows and self._used_bytes() > limit:
            self._delete_oldest(min(EVICT_CHUNK, self._rows))

    def _delete_oldest(self, count: int) -> None:
        """Delete `count` rows: oldest uploaded first, then oldest of any state."""
        query = "SELECT seq FROM observations WHERE state {} ? ORDER BY seq LIMIT ?"
        seqs = [r[0] for r in self.db.execute(query.format("="), [UPLOADED, count])]
        if len(seqs) < count:
            rest = self.db.execute(query.format("!="), [UPLOADED, count - len(seqs)])
            seqs += [r[0] for r in rest]
        self.db.executemany("DELETE FROM observations WHERE seq = ?", [(s,) for s in seqs])
        self._rows -= len(seqs)
        self.evicted += len(seqs)

    def stats(self) -> dict[str, Any]:
        """Row counts by state, seq range, timestamps and sizes."""
        by_state = dict(
            self.db.execute("SELECT state, count(*) FROM observations GROUP BY state").fetchall()
        )
        first, last, oldest, newest = self.db.execute(
            "SELECT min(seq), max(seq), min(captured_utc), max(captured_utc) FROM observations"
        ).fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "path": str(self.path),
            "rows": sum(by_state.values()),
            "pending": by_state.get(PENDING, 0),
            "uploaded": by_state.get(UPLOADED, 0),
            "quarantined": by_state.get(QUARANTINED, 0),
            "first_seq": first,
            "last_seq": last,
            "oldest_utc": oldest,
            "newest_utc": newest,
            "used_bytes": self._used_bytes(),
            "file_bytes": self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
            "max_rows": self.max_rows,
            "max_bytes": self.max_bytes,
        }

    def observations(self, state: str | None = None) -> Iterator[Observation]:
        """Stored observations in seq order, optionally only those in `state`."""
        where = "WHERE state = ?" if state else ""
        rows = self.db.execute(
            f"SELECT header, embedding FROM observations {where} ORDER BY seq",
            [state] if state else [],
        )
        for header, embedding in rows:
            yield Observation.model_validate({**json.loads(header), "embedding": embedding})

    def pending_rows(self, limit: int, newest_first: bool = False) -> list[tuple[int, str, bytes]]:
        """Up to `limit` committed pending rows (seq, header JSON, embedding) in upload order."""
        order = "DESC" if newest_first else "ASC"
        return self.db.execute(
            "SELECT seq, header, embedding FROM observations WHERE state = ? "
            f"ORDER BY seq {order} LIMIT ?",
            [PENDING, limit],
        ).fetchall()

    def set_state(self, seqs: Iterable[int], state: str) -> None:
        """Move pending rows to `state` in one transaction (rows evicted meanwhile are skipped)."""
        try:
            with immediate(self.db):
                self.db.executemany(
                    "UPDATE observations SET state = ? WHERE seq = ? AND state = ?",
                    [(state, seq, PENDING) for seq in seqs],
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot update upload state: {exc}") from None

    def upload_spent(self, day: str) -> int:
        """Bytes uploaded on `day` (a UTC date): kept here so a restart cannot reset the budget."""
        return int(self._meta("upload_spent", 0)) if self._meta("upload_day", "") == day else 0

    def add_upload_spent(self, day: str, nbytes: int) -> None:
        try:
            with immediate(self.db):
                spent = self.upload_spent(day) + nbytes
                self._set_meta("upload_day", day)
                self._set_meta("upload_spent", spent)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot record upload bytes: {exc}") from None

    def vacuum(self) -> None:
        """Return freed pages to the filesystem and truncate the WAL."""
        self.flush()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")

    def close(self) -> None:
        self.flush()
        self.db.close()


def open_store(config: StoreConfig, existing: bool = False) -> Store:
    """The queue a `[store]` section describes; `existing`: it must be there already (the
    `queue` and `upload` commands read a database, they never start an empty one)."""
    make = Store.open_existing if existing else Store
    return make(
        config.path,
        max_rows=config.max_rows,
        max_bytes=config.max_bytes,
        commit_every=config.commit_every,
        commit_interval_s=config.commit_interval_s,
        synchronous=config.synchronous,
        min_free_bytes=config.min_free_bytes,
    )
