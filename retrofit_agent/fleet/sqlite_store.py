"""The fleet store in one SQLite file: the tests' and the emulated camera's backend.

Same tables and meaning as PostgreSQL (`postgres_store`), without partitions: retention is a
DELETE. WAL with `synchronous=FULL`, so an acknowledged row survives power loss; one
connection behind a lock, so one writer at a time (ample for tests and a lab, not a fleet).
Times are stored as fixed-width UTC text (`2026-11-29T12:00:00.000000Z`) so that comparing
the text compares the times.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from retrofit_agent.common.sqlite import immediate
from retrofit_agent.fleet.store import (
    Campaign,
    Device,
    DeviceExists,
    EmbeddingChunk,
    FleetStore,
    ObservationQuery,
    StoredEvent,
    StoredRow,
    StoreError,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, token_sha256 BLOB NOT NULL UNIQUE,
    created_utc TEXT NOT NULL, revoked_utc TEXT);
CREATE TABLE IF NOT EXISTS observations (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, captured_utc TEXT NOT NULL,
    received_utc TEXT NOT NULL, batch_id TEXT NOT NULL, header TEXT NOT NULL, embedding BLOB,
    PRIMARY KEY (device_id, seq));
CREATE INDEX IF NOT EXISTS observations_captured ON observations (captured_utc);
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, start_utc TEXT NOT NULL,
    received_utc TEXT NOT NULL, batch_id TEXT NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (device_id, seq));
CREATE INDEX IF NOT EXISTS events_start ON events (start_utc);
CREATE TABLE IF NOT EXISTS campaigns (
    sha256 TEXT PRIMARY KEY, added_utc TEXT NOT NULL, document BLOB NOT NULL);
"""


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class SqliteStore(FleetStore):
    def __init__(self, path: str | Path, create: bool = True) -> None:
        path = Path(path)
        if not create and not path.is_file():
            raise StoreError(f"{path}: no such fleet database")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives power loss
            self._db.execute("PRAGMA busy_timeout=10000")  # the CLI beside a running server
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from None

    def device_for_token(self, token_sha256: bytes) -> str | None:
        query = "SELECT device_id FROM devices WHERE token_sha256=? AND revoked_utc IS NULL"
        with self._lock:
            found = self._db.execute(query, [token_sha256]).fetchone()
        return found[0] if found else None

    def add_device(self, device_id: str, token_sha256: bytes) -> None:
        now = utc_text(datetime.now(UTC))
        with self._lock, immediate(self._db):
            found = self._db.execute(
                "SELECT revoked_utc IS NULL FROM devices WHERE device_id=?", [device_id]
            ).fetchone()
            if found and found[0]:
                raise DeviceExists(f"device {device_id!r}: exists (revoke it to issue a new token)")
            self._db.execute(
                "INSERT OR REPLACE INTO devices VALUES (?, ?, ?, NULL)",
                [device_id, token_sha256, now],
            )

    def revoke_device(self, device_id: str) -> bool:
        now = utc_text(datetime.now(UTC))
        with self._lock, immediate(self._db):
            cursor = self._db.execute(
                "UPDATE devices SET revoked_utc=? WHERE device_id=? AND revoked_utc IS NULL",
                [now, device_id],
            )
        return cursor.rowcount == 1

    def devices(self) -> list[Device]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, created_utc, revoked_utc FROM devices ORDER BY device_id"
            ).fetchall()
        return [Device(d, from_text(c), from_text(r) if r else None) for d, c, r in rows]

    def store_rows(self, batch_id: str, rows: list[StoredRow]) -> int:
        now = utc_text(datetime.now(UTC))
        values = [
            (r.device_id, r.seq, utc_text(r.captured_utc), now, batch_id, r.header, r.embedding)
            for r in rows
        ]
        with self._lock, immediate(self._db):
            cursor = self._db.executemany(
                "INSERT OR IGNORE INTO observations VALUES (?, ?, ?, ?, ?, ?, ?)", values
            )
        return cursor.rowcount

    def store_events(self, batch_id: str, events: list[StoredEvent]) -> int:
        now = utc_text(datetime.now(UTC))
        values = [
            (e.device_id, e.seq, utc_text(e.start_utc), now, batch_id, e.event) for e in events
        ]
        with self._lock, immediate(self._db):
            cursor = self._db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", values
            )
        return cursor.rowcount

    def events(self, query: ObservationQuery) -> Iterator[str]:
        sql = "SELECT event FROM events WHERE start_utc >= ? AND start_utc < ?"
        args: list[object] = [utc_text(query.since), utc_text(query.until)]
        if query.device_id is not None:
            sql += " AND device_id = ?"
            args.append(query.device_id)
        if query.label is not None:
            sql += " AND json_extract(event, '$.label') = ?"
            args.append(query.label)
        sql += " ORDER BY start_utc, device_id, seq LIMIT ?"
        args.append(query.limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for (event,) in rows:
            yield event

    def add_campaign(self, sha256: str, document: bytes) -> bool:
        with self._lock, immediate(self._db):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO campaigns VALUES (?, ?, ?)",
                [sha256, utc_text(datetime.now(UTC)), document],
            )
        return cursor.rowcount == 1

    def remove_campaign(self, sha256: str) -> bool:
        with self._lock, immediate(self._db):
            cursor = self._db.execute("DELETE FROM campaigns WHERE sha256=?", [sha256])
        return cursor.rowcount == 1

    def campaigns(self) -> list[Campaign]:
        with self._lock:
            rows = self._db.execute(
                "SELECT sha256, added_utc, document FROM campaigns ORDER BY added_utc, sha256"
            ).fetchall()
        return [Campaign(s, from_text(a), d) for s, a, d in rows]

    def observations(self, query: ObservationQuery) -> Iterator[tuple[datetime, str]]:
        sql = (
            "SELECT received_utc, header FROM observations "
            "WHERE captured_utc >= ? AND captured_utc < ?"
        )
        args: list[object] = [utc_text(query.since), utc_text(query.until)]
        if query.device_id is not None:
            sql += " AND device_id = ?"
            args.append(query.device_id)
        if query.label is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM json_each(header, '$.labels')"
                " WHERE json_extract(value, '$.label') = ?)"
            )
            args.append(query.label)
        sql += " ORDER BY captured_utc, device_id, seq LIMIT ?"
        args.append(query.limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for received, header in rows:
            yield from_text(received), header

    def embeddings(
        self, since: datetime, until: datetime, device_id: str | None, chunk: int
    ) -> Iterator[EmbeddingChunk]:
        sql = (
            "SELECT rowid, device_id, seq, captured_utc, embedding FROM observations WHERE "
            "captured_utc >= ? AND captured_utc < ? AND embedding IS NOT NULL"
            " AND (? IS NULL OR device_id = ?) AND rowid > ? ORDER BY rowid LIMIT ?"
        )
        last = 0
        while True:
            args = [utc_text(since), utc_text(until), device_id, device_id, last, chunk]
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            keys = [(d, s, from_text(c)) for _, d, s, c, _ in rows]
            yield EmbeddingChunk(keys, np.vstack([np.frombuffer(e, np.float16) for *_, e in rows]))

    def retention(self, keep_days: int, today: datetime) -> list[str]:
        cutoff = today.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        cutoff -= timedelta(days=keep_days)
        with self._lock, immediate(self._db):
            rows = self._db.execute(
                "DELETE FROM observations WHERE captured_utc < ?", [utc_text(cutoff)]
            ).rowcount
            events = self._db.execute(
                "DELETE FROM events WHERE start_utc < ?", [utc_text(cutoff)]
            ).rowcount
        day = cutoff.date().isoformat()
        return [f"{rows} rows captured before {day}", f"{events} events started before {day}"]

    def close(self) -> None:
        with self._lock:
            self._db.close()
