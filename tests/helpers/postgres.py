"""A throw-away PostgreSQL cluster for the test session, and a fresh database per test.

The cluster is `retrofit_agent.fleet.localdb.LocalCluster` (the one `retrofit-fleet postgres
start` runs) in a temporary directory under /tmp, whose parents the unprivileged `postgres`
user can reach; fsync is off, since no test survives a crash of the machine. Where the
binaries or psycopg are missing the fleet tests that need it skip, saying why.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrofit_agent.fleet.localdb import LocalCluster, find_bin

_names = itertools.count(1)


def start_cluster() -> Iterator[LocalCluster]:
    pytest.importorskip("psycopg", reason="PostgreSQL tests need the [fleet] extra")
    missing = [name for name in ("initdb", "pg_ctl") if find_bin(name) is None]
    if missing:
        names = ", ".join(missing)
        pytest.skip(f"PostgreSQL server binaries not found ({names}): apt-get install postgresql")
    directory = Path(tempfile.mkdtemp(prefix="retrofit-fleet-pg-"))
    cluster = LocalCluster(directory, fsync=False).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(cluster: LocalCluster) -> str:
    """The URL of a new, empty database in the cluster."""
    import psycopg

    name = f"test_{next(_names)}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url_of(name)
