"""The queue of the previous schema (1) migrated on start, without losing a row.

fixtures/queue-schema1.db was written by the code on main before the keep policy (commit
503b6c3, schema 1), and is committed as it came out:

    RETROFIT_AGENT_DEVICE_ID='"cam-1"' python -m retrofit_agent --dry-run models/demo.mp4 \\
        --max-frames 12 --db queue-schema1.db --no-publish
    then, with that code's Store: seqs 1-3 set uploaded, 4 quarantined, 4321 upload bytes
    counted on 2026-12-01, the WAL checkpointed (TRUNCATE) and the store closed.

12 rows of the default bundle (128-d embeddings), seq_reserved 1001.
"""

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from retrofit_agent.observation import Observation
from retrofit_agent.store import migrate
from retrofit_agent.store.budget import UploadBudget
from retrofit_agent.store.database import SCHEMA_VERSION, TABLES, Meta, connect
from retrofit_agent.store.queue import Store

pytestmark = pytest.mark.device  # the camera migrates its own queue

FIXTURE = Path(__file__).parent / "fixtures" / "queue-schema1.db"


@pytest.fixture
def old_queue(tmp_path: Path) -> Path:
    return Path(shutil.copy(FIXTURE, tmp_path / "queue.db"))


def table_info(db: sqlite3.Connection, table: str) -> list[tuple]:
    return db.execute(f"PRAGMA table_info({table})").fetchall()


def test_the_fixture_is_schema_1():
    with contextlib.closing(sqlite3.connect(FIXTURE)) as db:
        assert Meta(db).get("schema_version", "") == "1"
        assert "reasons" not in {column[1] for column in table_info(db, "observations")}
        assert db.execute("SELECT count(*) FROM observations").fetchone()[0] == 12


def test_a_schema_1_queue_is_migrated_without_losing_a_row(old_queue, caplog):
    with contextlib.closing(sqlite3.connect(old_queue)) as db:
        before = db.execute("SELECT seq, state, header, embedding FROM observations").fetchall()
    caplog.set_level("INFO")
    store = Store(old_queue)
    try:
        assert "migrated the queue" in caplog.text
        after = store.db.execute(
            "SELECT seq, state, header, embedding, reasons FROM observations ORDER BY seq"
        ).fetchall()
        assert [row[:4] for row in after] == sorted(before)  # every row, byte for byte
        assert {row[4] for row in after} == {"every_frame"}
        stats = store.stats()
        assert (stats["rows"], stats["uploaded"], stats["quarantined"]) == (12, 3, 1)
        assert stats["kept_by_reason"] == {"every_frame": 12}
        assert stats["events"]["events"] == 0
        # the rows read back as the observations they were (schema 1, no reasons)
        observations = list(store.observations())
        assert [o.schema_version for o in observations] == [1] * 12
        assert all(o.reasons == [] and len(o.embedding) == 2 * 128 for o in observations)
        assert observations[0] == Observation.model_validate(
            {**json.loads(before[0][2]), "embedding": before[0][3]}
        )
        # what else the file held is still there: reserved seqs and the upload budget
        assert store.allocate_seq() == 1001
        assert UploadBudget(store.db, store.path).spent("2026-12-01") == 4321
        assert Meta(store.db).get("schema_version", "") == str(SCHEMA_VERSION)
        with contextlib.closing(sqlite3.connect(":memory:")) as fresh:
            for statement in TABLES:
                fresh.execute(statement)
            for table in ("observations", "events"):  # exactly the table a new file gets
                assert table_info(store.db, table) == table_info(fresh, table)
        indexes = {
            r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        assert {"idx_observations_state_seq", "idx_events_state_seq"} <= indexes
    finally:
        store.close()
    caplog.clear()
    with contextlib.closing(connect(old_queue)) as db:  # migrated once: now it is opened as is
        assert db.total_changes == 0
    assert "migrated" not in caplog.text


def test_a_failed_migration_leaves_the_file_as_it_was(old_queue, monkeypatch):
    def half_done(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE observations ADD COLUMN reasons TEXT")
        raise sqlite3.OperationalError("disk I/O error")  # e.g. the card failed part-way

    monkeypatch.setattr(migrate, "_from_1", half_done)
    with pytest.raises(sqlite3.OperationalError):
        connect(old_queue)
    with contextlib.closing(sqlite3.connect(old_queue)) as db:
        assert Meta(db).get("schema_version", "") == "1"
        assert "reasons" not in {column[1] for column in table_info(db, "observations")}
        assert db.execute("SELECT count(*) FROM observations").fetchone()[0] == 12


def test_sqlite_utils_is_imported_only_when_a_migration_runs(old_queue, tmp_path):
    probe = (
        "import sys; from retrofit_agent.store.queue import Store; "
        "Store(sys.argv[1]).close(); print('sqlite_utils' in sys.modules)"
    )

    def imported(path: Path) -> bool:
        run = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
        )
        return run.stdout.strip() == "True"

    assert not imported(tmp_path / "new.db")
    assert imported(old_queue)
    assert not imported(old_queue)  # migrated: opened as it is
