"""Fixtures of the fleet tests: a PostgreSQL cluster per session, a database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.fleet_extra import MISSING
from helpers.postgres import fresh_database, start_cluster

from retrofit_agent.fleet.localdb import LocalCluster

if MISSING:  # the emulated camera has only the device's packages: no fleet to test
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalCluster]:
    yield from start_cluster()


@pytest.fixture
def pg_url(postgres: LocalCluster) -> str:
    return fresh_database(postgres)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each store in turn: the protocol above them is one implementation."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    return fresh_database(request.getfixturevalue("postgres"))
