"""The local observation queue: SQLite in WAL mode, through the standard library's sqlite3.

- Rows are buffered and committed in batches (`commit_every` rows or `commit_interval_s`),
  so an SD card sees one fsync per batch, not one per frame. A committed row is acknowledged:
  with `synchronous=FULL` (the default) it survives kill -9 and power loss. The keep policy
  stores few frames, so the runtime calls `tick` on every frame: a row never waits longer
  than `commit_interval_s` for the next one. Label events (store.events) are written in the
  same transactions as the rows.
- `seq` is monotonic per device and never reused, also across restarts and evictions: blocks of
  SEQ_BLOCK numbers are reserved in the `meta` table before they are handed out, so a crash
  leaves a gap, never a duplicate `(device_id, seq)`.
- Bound and eviction order: after each batch, while the table holds more than `max_rows` rows
  or its used pages exceed `max_bytes` (or what the filesystem can spare beyond
  `min_free_bytes`: store.disk), rows are deleted oldest uploaded first, then oldest pending.
  Insert and eviction share one transaction. Freed pages are reused, so the file stays near
  its bound; `retrofit-agent queue vacuum` returns the space to the filesystem.
- A full disk (SQLITE_FULL) is not fatal (store.disk has the policy): the batch is rolled
  back, a chunk of rows is evicted in the order above and the batch retried; a batch that
  still does not fit is dropped and counted; while no block of seqs can be reserved,
  allocate_seq raises StoreFull (the frame is skipped). Every committed batch is logged at
  debug level (`committed rows= first_seq= last_seq=`): that line is the acknowledgement.
- Quarantined rows (refused for good by the ingest server) count as not uploaded: they are
  evicted together with pending rows, oldest first, and stay for diagnosis as long as those.
- Upload state: rows leave `pending` only through `set_state` (transport.upload calls it after
  the server's acknowledgement), so a crash re-sends instead of losing. The upload byte budget
  lives in the same file (store.budget); the tables and the `meta` table, in store.database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from retrofit_agent.common.logs import kv
from retrofit_agent.common.sqlite import immediate
from retrofit_agent.config import StoreConfig
from retrofit_agent.errors import StoreError, StoreFull
from retrofit_agent.event import Event
from retrofit_agent.observation import REASONS, Observation
from retrofit_agent.store.database import PENDING, QUARANTINED, UPLOADED, Meta, connect
from retrofit_agent.store.disk import DiskPolicy, is_full
from retrofit_agent.store.events import EventLog

log = logging.getLogger(__name__)

SEQ_BLOCK = 1000
EVICT_CHUNK = 256  # rows deleted per step while over the byte bound
INSERT = (
    "INSERT INTO observations (seq, device_id, captured_utc, state, reasons, header, embedding) "
    "VALUES (:seq, :device_id, :captured_utc, :state, :reasons, :header, :embedding)"
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
        max_events: int = 100_000,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.disk = DiskPolicy(self.path, min_free_bytes)
        self._pending: list[dict[str, Any]] = []
        self._oldest_pending_at = 0.0
        self.evicted = 0
        self.dropped = 0  # rows that did not fit even after eviction
        try:
            self.db = connect(self.path, synchronous)
            self._meta = Meta(self.db)
            self.events = EventLog(self.db, self.path, max_events)
            self._rows = self._count()
            self._next_seq = self._reserved = int(self._meta.get("seq_reserved", 1))
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

    def allocate_seq(self) -> int:
        """The next sequence number; reserves a new block (one small commit) when needed.

        StoreFull if the disk is too full to record the reservation (tried again after the
        disk policy's cool-down): a number not reserved on disk could be reused after a crash.
        """
        if self._next_seq >= self._reserved:
            reserved = self._next_seq + SEQ_BLOCK
            full = StoreFull(f"{self.path}: disk full, cannot reserve sequence numbers")
            if not self.disk.may_reserve():
                raise full
            if not self._write(lambda: self._meta.set("seq_reserved", reserved)):
                self.disk.reservation_failed()
                raise full
            self._reserved = reserved
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def add(self, observation: Observation, header: bytes) -> None:
        """Queue a row (`header`: its JSON without the embedding); committed with its batch."""
        self._mark_dirty()
        self._pending.append(
            {
                "seq": observation.seq,
                "device_id": observation.device_id,
                "captured_utc": observation.captured_utc.isoformat(),
                "state": PENDING,
                "reasons": ",".join(observation.reasons),
                "header": header.decode(),
                "embedding": observation.embedding,
            }
        )
        if len(self._pending) >= self.commit_every:
            self.flush()
        else:
            self.tick()

    def put_event(self, event: Event) -> None:
        """Queue an event's new state (opened or ended); committed with the next batch."""
        self._mark_dirty()
        self.events.put(event)

    def _mark_dirty(self) -> None:
        if not self._pending and not self.events.dirty:
            self._oldest_pending_at = time.monotonic()

    def tick(self) -> None:
        """Commit what has waited `commit_interval_s` (cheap: called for every frame)."""
        if (self._pending or self.events.dirty) and (
            time.monotonic() - self._oldest_pending_at >= self.commit_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        """Commit buffered rows and events and enforce the bound, in one transaction."""
        if not self._pending and not self.events.dirty:
            return
        if self._write(self._insert_pending):
            self.events.written()
            if self._pending:
                seqs = [row["seq"] for row in self._pending]
                log.debug(
                    "committed", extra=kv(rows=len(seqs), first_seq=min(seqs), last_seq=max(seqs))
                )
        else:  # events stay buffered: they are few, and tried again with the next batch
            self.dropped += len(self._pending)
            self._report_full("disk full, nothing left to evict: observations not stored")
        self._pending.clear()

    def _insert_pending(self) -> None:
        limit = self.disk.byte_limit(self.max_bytes)
        self.db.executemany(INSERT, self._pending)
        self.events.write()
        self._rows += len(self._pending)
        self._evict(limit)

    def _write(self, work: Callable[[], None]) -> bool:
        """Run `work` in a transaction, making room on SQLITE_FULL; False if it never fit."""
        return self.disk.write(
            lambda: self._transaction(work, "write observations"), self._make_room
        )

    def _make_room(self) -> None:
        """After SQLITE_FULL: evict a chunk of rows in the usual order, in its own transaction
        (which may fail as well: then the retry fails and the batch is dropped)."""
        before = self._rows
        count = min(self._rows, max(EVICT_CHUNK, 2 * len(self._pending)))
        self._transaction(lambda: self._delete_oldest(count), "evict observations")
        self._report_full("disk full: evicted the oldest rows to make room", before - self._rows)

    def _transaction(self, work: Callable[[], None], what: str) -> bool:
        """`work` committed (True), or rolled back on SQLITE_FULL (False); StoreError else."""
        evicted = self.evicted
        try:
            with immediate(self.db):
                work()
        except sqlite3.DatabaseError as exc:  # rolled back: so are the counts
            self._rows, self.evicted = self._count(), evicted
            if not is_full(exc):
                raise StoreError(f"{self.path}: cannot {what}: {exc}") from None
            return False
        return True

    def _report_full(self, message: str, evicted: int = 0) -> None:
        self.disk.report(message, evicted=evicted, rows=self._rows, dropped=self.dropped)

    def size(self) -> tuple[int, int]:
        """Rows and used bytes, without a table scan (cheap enough for every metrics snapshot)."""
        return self._rows, self._used_bytes()

    def _used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

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
        kept: Counter[str] = Counter()
        for reasons, count in self.db.execute(
            "SELECT reasons, count(*) FROM observations GROUP BY reasons"
        ):
            kept.update(dict.fromkeys(reasons.split(","), count))
        return {
            "path": str(self.path),
            "rows": sum(by_state.values()),
            "pending": by_state.get(PENDING, 0),
            "uploaded": by_state.get(UPLOADED, 0),
            "quarantined": by_state.get(QUARANTINED, 0),
            "kept_by_reason": {r: kept[r] for r in REASONS if kept[r]},
            "events": self.events.stats(),
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

    def vacuum(self) -> None:
        """Return freed pages to the filesystem and truncate the WAL (VACUUM writes the whole
        new file through the WAL: checkpointed after it, the file's size is its real one)."""
        self.flush()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
        max_events=config.max_events,
    )
