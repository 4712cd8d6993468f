"""The local observation queue: SQLite in WAL mode, through the standard library's sqlite3.

- Rows are buffered and committed in batches (`commit_every` rows or `commit_interval_s`),
  so an SD card sees one fsync per batch, not one per frame. A committed row is acknowledged:
  with `synchronous=FULL` (the default) it survives kill -9 and power loss.
- `seq` is monotonic per device and never reused, also across restarts and evictions: blocks of
  SEQ_BLOCK numbers are reserved in the `meta` table before they are handed out, so a crash
  leaves a gap, never a duplicate `(device_id, seq)`.
- Bound and eviction order: after each batch, while the table holds more than `max_rows` rows
  or its used pages exceed `max_bytes`, rows are deleted oldest uploaded first, then oldest
  pending. Insert and eviction share one transaction. Freed pages are reused, so the file stays
  near `max_bytes`; `retrofit-agent queue vacuum` returns the space to the filesystem.
  Quarantined rows (refused for good by the ingest server) count as not uploaded: they are
  evicted together with pending rows, oldest first, and stay for diagnosis as long as those.
- Upload state: rows leave `pending` only through `set_state` (retrofit_agent.upload calls it
  after the server's acknowledgement), so a crash re-sends instead of losing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from retrofit_agent.errors import StoreError
from retrofit_agent.observation import Observation

SCHEMA_VERSION = 1
SEQ_BLOCK = 1000
PENDING = "pending"
UPLOADED = "uploaded"
QUARANTINED = "quarantined"
EVICT_CHUNK = 256  # rows deleted per step while over the byte bound
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
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self._pending: list[dict[str, Any]] = []
        self._oldest_pending_at = 0.0
        self.evicted = 0
        try:
            # autocommit: transactions are explicit (_atomic), never opened behind our back
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
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

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """One transaction: committed at the end, rolled back on any error."""
        self.db.execute("BEGIN")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a failed COMMIT may already have rolled back
                self.db.execute("ROLLBACK")
            raise

    def _count(self) -> int:
        return self.db.execute("SELECT count(*) FROM observations").fetchone()[0]

    def _create_schema(self) -> None:
        with self._atomic():
            for statement in SCHEMA:
                self.db.execute(statement)
            version = int(self._meta("schema_version", SCHEMA_VERSION))
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, this agent reads {SCHEMA_VERSION}"
                )
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
        """The next sequence number; reserves a new block (one small commit) when needed."""
        if self._next_seq >= self._reserved:
            self._reserved = self._next_seq + SEQ_BLOCK
            with self._atomic():
                self._set_meta("seq_reserved", self._reserved)
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
        try:
            with self._atomic():
                self.db.executemany(INSERT, self._pending)
                self._rows += len(self._pending)
                self._evict()
        except sqlite3.DatabaseError as exc:
            self._rows = self._count()
            raise StoreError(f"{self.path}: cannot write observations: {exc}") from None
        self._pending.clear()

    def _used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _evict(self) -> None:
        if self._rows > self.max_rows:
            self._delete_oldest(self._rows - self.max_rows)
        while self._rows and self._used_bytes() > self.max_bytes:
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
            with self._atomic():
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
            with self._atomic():
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
