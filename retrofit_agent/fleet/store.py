"""The fleet's storage behind one interface, so one protocol implementation serves every store.

`retrofit_agent.fleet.app` (the HTTP side: auth, limits, decoding, per-row checks, the
acknowledgement) calls only `FleetStore`; `open_store(url)` picks the implementation from the
`--database` URL:

- `postgresql://...`: `postgres_store.PostgresStore`, the backend for a fleet (partitioned by
  day, several ingest hosts on one database).
- `sqlite:///path`: `sqlite_store.SqliteStore`, one file. It earns its place where PostgreSQL
  is not there: the device's upload tests need a server that starts in milliseconds, and the
  emulated aarch64 run has no PostgreSQL. One writer at a time: not for a fleet.

The methods are synchronous (psycopg's pool and sqlite3 are); the app calls them from worker
threads, bounded by `Limits.max_inflight`. `store_rows` returns only after the rows are
committed: the acknowledgement is built from what it returns; `store_events` likewise for
label events (contract 3, `retrofit_agent.event`), kept in their own table keyed by
`(device_id, seq)` and dropped by retention with the observations of their start day.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from retrofit_agent.errors import ConfigError, RetrofitError


@dataclass(frozen=True)
class StoredRow:
    """One validated observation as stored: its key, its day, the header JSON, the embedding."""

    device_id: str
    seq: int
    captured_utc: datetime  # timezone-aware
    header: str  # the observation without its embedding (contract 3), JSON
    embedding: bytes | None  # float16, as uploaded


@dataclass(frozen=True)
class StoredEvent:
    """One validated, closed label event as stored: its key, its start day, its JSON."""

    device_id: str
    seq: int
    start_utc: datetime  # timezone-aware; picks the day partition
    event: str  # contract 3's Event, JSON


@dataclass(frozen=True)
class Device:
    device_id: str
    created_utc: datetime
    revoked_utc: datetime | None


@dataclass(frozen=True)
class Campaign:
    sha256: str
    added_utc: datetime
    document: bytes  # JSON, opaque until the campaigns issue (18) defines it


@dataclass(frozen=True)
class ObservationQuery:
    since: datetime
    until: datetime
    device_id: str | None = None
    label: str | None = None  # a label name, in any group
    limit: int = 1000


@dataclass(frozen=True)
class EmbeddingChunk:
    """Up to `chunk` stored embeddings of a time window: keys and a (n, dim) float16 array."""

    keys: list[tuple[str, int, datetime]]  # (device_id, seq, captured_utc)
    vectors: np.ndarray


class StoreError(ConfigError):
    """The database URL or its content is unusable (exit 78: an operator must fix it)."""


class DeviceExists(StoreError):
    pass


class StoreUnavailable(RetrofitError):
    """The database cannot be reached now (exit 69: systemd restarts the server later)."""

    exit_code = 69  # EX_UNAVAILABLE


class FleetStore(ABC):
    """What the ingest app, the CLI and the queries need from a database."""

    @abstractmethod
    def device_for_token(self, token_sha256: bytes) -> str | None:
        """The device a token belongs to, or None if unknown or revoked (read every request:
        a revocation takes effect at the next one)."""

    @abstractmethod
    def add_device(self, device_id: str, token_sha256: bytes) -> None:
        """Register a device with its token's hash; DeviceExists if the id is taken."""

    @abstractmethod
    def revoke_device(self, device_id: str) -> bool:
        """Revoke the device's token; False if there is no such active device."""

    @abstractmethod
    def devices(self) -> list[Device]: ...

    @abstractmethod
    def store_rows(self, batch_id: str, rows: list[StoredRow]) -> int:
        """Insert the rows not yet held, in one committed transaction; how many were new."""

    @abstractmethod
    def store_events(self, batch_id: str, events: list[StoredEvent]) -> int:
        """Insert the events not yet held, in one committed transaction; how many were new."""

    @abstractmethod
    def events(self, query: ObservationQuery) -> Iterator[str]:
        """The JSON of matching events (by label name, device, start in the window), by
        start_utc, at most query.limit."""

    @abstractmethod
    def add_campaign(self, sha256: str, document: bytes) -> bool:
        """Store a campaign document; False if the same document is already there."""

    @abstractmethod
    def remove_campaign(self, sha256: str) -> bool: ...

    @abstractmethod
    def campaigns(self) -> list[Campaign]:
        """Every campaign document, oldest first."""

    @abstractmethod
    def observations(self, query: ObservationQuery) -> Iterator[tuple[datetime, str]]:
        """(received_utc, header JSON) of matching rows, by captured_utc, at most query.limit."""

    @abstractmethod
    def embeddings(
        self, since: datetime, until: datetime, device_id: str | None, chunk: int
    ) -> Iterator[EmbeddingChunk]:
        """The stored embeddings captured in [since, until), chunk by chunk."""

    @abstractmethod
    def retention(self, keep_days: int, today: datetime) -> list[str]:
        """Drop what was captured before `keep_days` days before today; what was dropped."""

    @abstractmethod
    def close(self) -> None: ...


def open_store(url: str, create: bool = True, pool_size: int = 4) -> FleetStore:
    """The store a `--database` URL names: sqlite:///path or postgresql://...; `pool_size`
    connections at most (PostgreSQL; SQLite has one)."""
    if url.startswith("sqlite:///"):
        from retrofit_agent.fleet.sqlite_store import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), create)
    if url.startswith(("postgresql://", "postgres://")):
        from retrofit_agent.fleet.postgres_store import PostgresStore

        return PostgresStore(url, create, pool_size)
    raise StoreError(f"--database {url.split(':', 1)[0]}:...: not sqlite:///PATH or postgresql://")
