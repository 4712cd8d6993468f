"""The queue's SQLite file: how a connection is opened, its tables and their version, and the
`meta` table of named values that must outlive the process.

Everything that knows the schema is here, so a new version changes one module: its tables go
into TABLES and `prepare` brings an older file up to SCHEMA_VERSION inside the same
transaction that checks it (store.migrate, with sqlite-utils, imported only when a migration
runs: the per-frame path keeps to the standard library's sqlite3, which saves ~3 MiB of agent
RSS). A file of a newer version, or of one no migration starts from, is refused.

Version 2 (the keep policy): observations carry `reasons` (why the row was kept), and label
events have their own table (store.events).

The connection is in autocommit mode (isolation_level=None): every transaction is explicit
(common.sqlite.immediate), never opened behind the caller's back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from retrofit_agent.common.sqlite import immediate
from retrofit_agent.errors import StoreError

SCHEMA_VERSION = 2
# SQLite's own page cache per connection (its default is 2 MiB): the queue appends and reads
# rows once, so the OS page cache serves as well; 256 KiB keeps the agent's RSS down.
CACHE_KIB = 256
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
# The tables of SCHEMA_VERSION, as sqlite-utils creates them (store.migrate transforms the
# observations of version 1 into exactly this table). `reasons`: comma-separated.
TABLES = (
    META,
    "CREATE TABLE IF NOT EXISTS observations (seq INTEGER PRIMARY KEY, "
    "device_id TEXT NOT NULL, captured_utc TEXT NOT NULL, state TEXT NOT NULL, "
    "reasons TEXT NOT NULL, header TEXT NOT NULL, embedding BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idx_observations_state_seq ON observations (state, seq)",
    # `state`: open (not yet uploadable), then pending, uploaded, quarantined; `event`: JSON
    "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, device_id TEXT NOT NULL, "
    "start_utc TEXT NOT NULL, state TEXT NOT NULL, event TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS idx_events_state_seq ON events (state, seq)",
)


MIGRATIONS = (1,)  # versions store.migrate brings up to SCHEMA_VERSION
# Upload states of observations and events; `open`: an event still going on (not uploadable).
OPEN = "open"
PENDING = "pending"
UPLOADED = "uploaded"
QUARANTINED = "quarantined"


class Meta:
    """The `meta` table: text values by key (the schema version, the reserved seqs, the upload
    budget). Writes join the caller's transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str, default: object) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else str(default)

    def set(self, key: str, value: object) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, str(value)],
        )


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in WAL mode with the given durability and a small page cache, to a file
    with this version's tables; sqlite3.DatabaseError or StoreError (another version)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        prepare(db, path)
    except BaseException:
        db.close()
        raise
    return db


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables of a new file, migrate an older one, refuse any other version; an
    existing file of this version is not written to."""
    meta = Meta(db)
    with immediate(db):
        db.execute(META)
        stored = meta.get("schema_version", "")
        if stored not in ("", str(SCHEMA_VERSION)):
            if int(stored) not in MIGRATIONS:
                raise StoreError(
                    f"{path}: schema version {stored}, this agent reads {SCHEMA_VERSION} "
                    f"(and migrates {', '.join(map(str, MIGRATIONS))})"
                )
            from retrofit_agent.store import migrate  # only now: sqlite-utils costs ~3 MiB RSS

            migrate.upgrade(db, int(stored), path)
        for statement in TABLES:
            db.execute(statement)
        if stored != str(SCHEMA_VERSION):
            meta.set("schema_version", SCHEMA_VERSION)
