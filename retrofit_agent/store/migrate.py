"""Bringing a queue of an older schema up to store.database.SCHEMA_VERSION, in place.

Called by store.database.prepare inside the transaction that read the old version, so a
migration is all or nothing: a crash or an error part-way leaves the file as it was. This is
the one module that imports sqlite-utils (its `transform` rebuilds a table the way SQLite's
ALTER TABLE cannot: a new NOT NULL column without a default, in its place among the others),
and it is imported only when a migration runs, so the agent's RSS does not pay for it.

Version 1 -> 2: observations gain `reasons`. Every row of version 1 was stored because the
agent stored every frame, so their reasons are `every_frame`; their header JSON stays as it
was written (schema 1, which the Observation model still reads). The events table is new and
is created by `prepare` like any missing table.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import sqlite_utils

from retrofit_agent.common.logs import kv

log = logging.getLogger(__name__)

COLUMNS_2 = ("seq", "device_id", "captured_utc", "state", "reasons", "header", "embedding")


def upgrade(db: sqlite3.Connection, version: int, path: Path) -> None:
    """Migrate the file on `db` (inside its open transaction) from `version` on."""
    if version == 1:
        _from_1(db)
    log.info("migrated the queue", extra=kv(path=path, from_version=version))


def _from_1(db: sqlite3.Connection) -> None:
    table = sqlite_utils.Database(db, recursive_triggers=False, execute_plugins=False).table(
        "observations"
    )
    table.add_column("reasons", str)
    db.execute("UPDATE observations SET reasons = 'every_frame'")
    # transform drops the table's indexes with the old table: prepare creates them again
    table.transform(not_null={"reasons"}, column_order=COLUMNS_2)
