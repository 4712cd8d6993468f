"""The fleet store on PostgreSQL (psycopg 3, a connection pool per ingest worker).

- `observations` is partitioned by day of the row's own `captured_utc`, so retention is
  `DETACH PARTITION ... CONCURRENTLY` then `DROP TABLE` (no vacuum of deleted rows, no lock on
  the table ingest writes to). A unique key on a partitioned table must include the partition
  key, so the key is `(device_id, seq, captured_utc)`: `(device_id, seq)` is unique only
  among rows that also agree on `captured_utc`. A re-send repeats a row exactly (the device
  sends the header it stored), so re-sends land in the same partition and deduplicate; only
  a device that re-used a seq with another time could store two rows under one seq, and a
  token writes only its own device's rows, so it could confuse nothing but itself.
- Partitions are created 3 days ahead at start and by `retention`, and on demand for a row of
  another day (a device uploading last month's backlog), under an advisory lock so workers do
  not race; each process remembers the days it saw, so the common path costs nothing. A
  partition dropped meanwhile (retention) fails the insert with "no partition": the cache is
  reloaded and the batch tried once more.
- Rows go in by binary COPY into a per-connection temporary staging table, then one
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING` whose row count is the number of new rows;
  bench/fleet_insert.py measured it against executemany of `INSERT ... ON CONFLICT DO NOTHING`
  (pipelined) and kept the faster (numbers in bench/results/fleet_load.md).
- Label events (`events`) are partitioned the same way, by the day of their `start_utc`, and
  retention drops both tables' partitions of a day together. They are few (an event is a
  label's presence over seconds to hours), so they go in by one `INSERT ... SELECT FROM
  unnest(...) ON CONFLICT DO NOTHING`, not COPY.
- Embeddings are the uploaded float16 bytes (bytea). Nearest neighbours are an exact scan of a
  time window (`retrofit_agent.fleet.query`); pgvector, when the extension is installed, is
  detected at start and reported, not used yet (it is not installed on these machines, so a
  path through it could not be tested here).
- Tokens are looked up on every request (an indexed read of a small table): revocation takes
  effect at the next request, with no cache to expire.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from retrofit_agent.errors import one_line
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
    StoreUnavailable,
)

SCHEMA_LOCK = 0x19F1EE7  # advisory lock: schema and partition changes, one process at a time
DAYS_AHEAD = 3
PARTITIONED = ("observations", "events")  # each by day: observations_pYYYYMMDD, events_p...
PARTITION = re.compile(r"(observations|events)_p(\d{8})")
COLUMNS = "device_id, seq, captured_utc, batch_id, header, embedding"

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id text PRIMARY KEY, token_sha256 bytea NOT NULL UNIQUE,
    created_utc timestamptz NOT NULL DEFAULT now(), revoked_utc timestamptz);
CREATE TABLE IF NOT EXISTS observations (
    device_id text NOT NULL, seq bigint NOT NULL, captured_utc timestamptz NOT NULL,
    received_utc timestamptz NOT NULL DEFAULT now(), batch_id text NOT NULL,
    header jsonb NOT NULL, embedding bytea,
    PRIMARY KEY (device_id, seq, captured_utc)
) PARTITION BY RANGE (captured_utc);
CREATE TABLE IF NOT EXISTS events (
    device_id text NOT NULL, seq bigint NOT NULL, start_utc timestamptz NOT NULL,
    received_utc timestamptz NOT NULL DEFAULT now(), batch_id text NOT NULL,
    event jsonb NOT NULL,
    PRIMARY KEY (device_id, seq, start_utc)
) PARTITION BY RANGE (start_utc);
CREATE TABLE IF NOT EXISTS campaigns (
    sha256 text PRIMARY KEY, added_utc timestamptz NOT NULL DEFAULT now(),
    document bytea NOT NULL);
"""
STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS staging (device_id text, seq bigint, "
    "captured_utc timestamptz, batch_id text, header text, embedding bytea) "
    "ON COMMIT DELETE ROWS"
)
STAGING_TYPES = ["text", "int8", "timestamptz", "text", "text", "bytea"]
MERGE = (
    f"INSERT INTO observations ({COLUMNS}) SELECT device_id, seq, captured_utc, batch_id, "
    "header::jsonb, embedding FROM staging ON CONFLICT DO NOTHING"
)
INSERT_EVENTS = (
    "INSERT INTO events (device_id, seq, start_utc, batch_id, event) "
    "SELECT d, s, t, %s, e::jsonb FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[], "
    "%s::text[]) AS u(d, s, t, e) ON CONFLICT DO NOTHING"
)

log = logging.getLogger(__name__)


def partition_name(day: date, table: str = "observations") -> str:
    return f"{table}_p{day:%Y%m%d}"


def _prepare(conn: psycopg.Connection) -> None:
    conn.execute(STAGING)
    conn.commit()


class PostgresStore(FleetStore):
    def __init__(self, url: str, create: bool = True, pool_size: int = 4) -> None:
        self._url = url
        self._days: dict[str, set[date]] = {table: set() for table in PARTITIONED}
        try:  # once outside the pool, which would only say that it timed out
            with psycopg.connect(url, connect_timeout=10) as conn:
                found = conn.execute("SELECT to_regclass('observations')").fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{_safe(url)}: {one_line(exc)}") from None
        if not create and found == (None,):
            raise StoreError(f"{_safe(url)}: no fleet tables (start serve or add a device first)")
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            configure=_prepare,
            open=False,
            name="fleet",
        )
        try:
            self._pool.open(wait=True, timeout=15)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(f"{_safe(url)}: cannot connect to PostgreSQL") from None
        if create:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
                conn.execute(SCHEMA)
            self.ensure_partitions(self._ahead(datetime.now(UTC)))
        self._load_days()
        self.pgvector = self._has_pgvector()

    def _has_pgvector(self) -> bool:
        with self._pool.connection() as conn:
            found = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            return found.fetchone() is not None

    @staticmethod
    def _ahead(now: datetime) -> set[date]:
        today = now.astimezone(UTC).date()
        return {today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)}

    def partitions(self, table: str = "observations") -> list[str]:
        """The names of `table`'s day partitions, oldest first."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
                [table],
            ).fetchall()
        return [name for (name,) in rows]

    def _load_days(self) -> None:
        for table in PARTITIONED:
            found = (PARTITION.fullmatch(name) for name in self.partitions(table))
            self._days[table] = {datetime.strptime(m[2], "%Y%m%d").date() for m in found if m}

    def ensure_partitions(self, days: set[date]) -> None:
        """Create the day partitions of every partitioned table that are missing (idempotent,
        safe from many processes)."""
        missing = {table: days - known for table, known in self._days.items()}
        if not any(missing.values()):
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            for table, table_days in missing.items():
                for day in sorted(table_days):
                    start = datetime.combine(day, time(), UTC)
                    end = start + timedelta(days=1)
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {partition_name(day, table)} PARTITION OF "
                        f"{table} FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
        for table, table_days in missing.items():
            self._days[table] |= table_days

    def device_for_token(self, token_sha256: bytes) -> str | None:
        with self._pool.connection() as conn:
            found = conn.execute(
                "SELECT device_id FROM devices WHERE token_sha256 = %s AND revoked_utc IS NULL",
                [token_sha256],
            ).fetchone()
        return found[0] if found else None

    def add_device(self, device_id: str, token_sha256: bytes) -> None:
        with self._pool.connection() as conn, conn.transaction():
            found = conn.execute(
                "SELECT revoked_utc IS NULL FROM devices WHERE device_id = %s FOR UPDATE",
                [device_id],
            ).fetchone()
            if found and found[0]:
                raise DeviceExists(f"device {device_id!r}: exists (revoke it to issue a new token)")
            conn.execute(
                "INSERT INTO devices (device_id, token_sha256) VALUES (%s, %s) ON CONFLICT "
                "(device_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                "created_utc = now(), revoked_utc = NULL",
                [device_id, token_sha256],
            )

    def revoke_device(self, device_id: str) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE devices SET revoked_utc = now() "
                "WHERE device_id = %s AND revoked_utc IS NULL",
                [device_id],
            )
        return cursor.rowcount == 1

    def devices(self) -> list[Device]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT device_id, created_utc, revoked_utc FROM devices ORDER BY device_id"
            ).fetchall()
        return [Device(*row) for row in rows]

    def store_rows(self, batch_id: str, rows: list[StoredRow]) -> int:
        self.ensure_partitions({r.captured_utc.date() for r in rows})
        try:
            return self._copy(batch_id, rows)
        except errors.CheckViolation:  # "no partition of relation found": dropped meanwhile
            self._load_days()
            self.ensure_partitions({r.captured_utc.date() for r in rows})
            return self._copy(batch_id, rows)

    def _copy(self, batch_id: str, rows: list[StoredRow]) -> int:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY staging ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(STAGING_TYPES)
                for r in rows:
                    copy.write_row(
                        (r.device_id, r.seq, r.captured_utc, batch_id, r.header, r.embedding)
                    )
            cur.execute(MERGE)
            return cur.rowcount

    def store_events(self, batch_id: str, events: list[StoredEvent]) -> int:
        days = {e.start_utc.date() for e in events}
        self.ensure_partitions(days)
        try:
            return self._insert_events(batch_id, events)
        except errors.CheckViolation:  # a day partition dropped meanwhile (retention)
            self._load_days()
            self.ensure_partitions(days)
            return self._insert_events(batch_id, events)

    def _insert_events(self, batch_id: str, events: list[StoredEvent]) -> int:
        columns = [
            [e.device_id for e in events],
            [e.seq for e in events],
            [e.start_utc for e in events],
            [e.event for e in events],
        ]
        with self._pool.connection() as conn, conn.transaction():
            return conn.execute(INSERT_EVENTS, [batch_id, *columns]).rowcount

    def events(self, query: ObservationQuery) -> Iterator[str]:
        sql = "SELECT event::text FROM events WHERE start_utc >= %s AND start_utc < %s"
        args: list[object] = [query.since, query.until]
        if query.device_id is not None:
            sql += " AND device_id = %s"
            args.append(query.device_id)
        if query.label is not None:
            sql += " AND event->>'label' = %s"
            args.append(query.label)
        sql += " ORDER BY start_utc, device_id, seq LIMIT %s"
        args.append(query.limit)
        with self._pool.connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        for (event,) in rows:
            yield event

    def add_campaign(self, sha256: str, document: bytes) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "INSERT INTO campaigns (sha256, document) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [sha256, document],
            )
        return cursor.rowcount == 1

    def remove_campaign(self, sha256: str) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute("DELETE FROM campaigns WHERE sha256 = %s", [sha256])
        return cursor.rowcount == 1

    def campaigns(self) -> list[Campaign]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT sha256, added_utc, document FROM campaigns ORDER BY added_utc, sha256"
            ).fetchall()
        return [Campaign(s, a, bytes(d)) for s, a, d in rows]

    def observations(self, query: ObservationQuery) -> Iterator[tuple[datetime, str]]:
        sql = (
            "SELECT received_utc, header::text FROM observations "
            "WHERE captured_utc >= %s AND captured_utc < %s"
        )
        args: list[object] = [query.since, query.until]
        if query.device_id is not None:
            sql += " AND device_id = %s"
            args.append(query.device_id)
        if query.label is not None:
            sql += (
                " AND header->'labels' @> jsonb_build_array(jsonb_build_object('label', %s::text))"
            )
            args.append(query.label)
        sql += " ORDER BY captured_utc, device_id, seq LIMIT %s"
        args.append(query.limit)
        with self._pool.connection() as conn:
            rows = conn.execute(sql, args).fetchall()
        yield from rows

    def embeddings(
        self, since: datetime, until: datetime, device_id: str | None, chunk: int
    ) -> Iterator[EmbeddingChunk]:
        sql = (
            "SELECT device_id, seq, captured_utc, embedding FROM observations "
            "WHERE captured_utc >= %s AND captured_utc < %s AND embedding IS NOT NULL "
            "AND (%s::text IS NULL OR device_id = %s)"
        )
        with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name="embeddings") as cur,  # server side: one chunk in memory
        ):
            cur.execute(sql, [since, until, device_id, device_id])
            while rows := cur.fetchmany(chunk):
                keys = [(d, s, c) for d, s, c, _ in rows]
                vectors = np.vstack([np.frombuffer(e, np.float16) for *_, e in rows])
                yield EmbeddingChunk(keys, vectors)

    def retention(self, keep_days: int, today: datetime) -> list[str]:
        first_kept = today.astimezone(UTC).date() - timedelta(days=keep_days)
        dropped = []
        with psycopg.connect(self._url, autocommit=True) as conn:  # CONCURRENTLY: no transaction
            for table in PARTITIONED:
                for name in self.partitions(table):
                    match = PARTITION.fullmatch(name)
                    if match and datetime.strptime(match[2], "%Y%m%d").date() < first_kept:
                        conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name} CONCURRENTLY")
                        conn.execute(f"DROP TABLE {name}")
                        dropped.append(name)
        self._load_days()
        self.ensure_partitions(self._ahead(today))
        return dropped

    def close(self) -> None:
        self._pool.close()


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)
