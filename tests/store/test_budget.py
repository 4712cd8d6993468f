"""The upload byte budget on its own: on a bare connection to the queue's file, no Store."""

import contextlib
import sqlite3
import threading

import pytest

from retrofit_agent.errors import StoreError
from retrofit_agent.store.budget import UploadBudget
from retrofit_agent.store.database import connect


def test_upload_budget_survives_a_restart_and_resets_each_day(tmp_path):
    path = tmp_path / "q.db"
    with contextlib.closing(connect(path)) as db:
        budget = UploadBudget(db, path)
        assert budget.spent("2026-11-29") == 0  # nothing recorded yet
        budget.add("2026-11-29", 1000)
        budget.add("2026-11-29", 234)
    with contextlib.closing(connect(path)) as db:  # the agent restarted
        budget = UploadBudget(db, path)
        assert budget.spent("2026-11-29") == 1234
        assert budget.spent("2026-11-30") == 0
        budget.add("2026-11-30", 5)
        assert budget.spent("2026-11-30") == 5
        assert budget.spent("2026-11-29") == 0  # only the current day is kept
        assert db.execute("SELECT count(*) FROM meta WHERE key LIKE 'upload%'").fetchone()[0] == 2


def test_two_writers_never_lose_an_addition(tmp_path):
    """The service's uploader and an `upload --once` on one file: each addition reads and
    writes in one immediate transaction, so none overwrites the other's."""
    path = tmp_path / "q.db"
    connect(path).close()
    adds = 150

    def writer() -> None:
        with contextlib.closing(connect(path)) as db:
            budget = UploadBudget(db, path)
            for _ in range(adds):
                budget.add("2026-11-29", 1)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with contextlib.closing(connect(path)) as db:
        assert UploadBudget(db, path).spent("2026-11-29") == 2 * adds


def test_a_failed_write_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "q.db"
    connect(path).close()
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    with contextlib.closing(read_only):
        budget = UploadBudget(read_only, path)
        with pytest.raises(StoreError, match=r"q\.db: cannot record upload bytes: .*readonly"):
            budget.add("2026-11-29", 10)
        assert budget.spent("2026-11-29") == 0
