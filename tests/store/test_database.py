"""The queue's file: tables and version, the meta table (the queue on top: test_store)."""

import contextlib

import pytest

from retrofit_agent.errors import StoreError
from retrofit_agent.store.database import SCHEMA_VERSION, Meta, connect


def test_a_new_file_gets_the_tables_and_the_version_an_existing_one_no_write(tmp_path):
    path = tmp_path / "q.db"
    with contextlib.closing(connect(path)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "observations", "events"}
        assert Meta(db).get("schema_version", None) == str(SCHEMA_VERSION)
    with contextlib.closing(connect(path, "NORMAL")) as db:
        assert db.total_changes == 0  # opening a queue writes nothing
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_another_version_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "q.db"
    with contextlib.closing(connect(path)) as db:
        Meta(db).set("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=rf"q\.db: schema version {SCHEMA_VERSION + 1}, this"):
        connect(path)


def test_meta_values_are_text_with_a_default(tmp_path):
    with contextlib.closing(connect(tmp_path / "q.db")) as db:
        meta = Meta(db)
        assert meta.get("seq_reserved", 1) == "1"
        meta.set("seq_reserved", 2000)
        meta.set("seq_reserved", 3000)  # replaced, not added
        assert meta.get("seq_reserved", 1) == "3000"
        assert db.execute("SELECT count(*) FROM meta WHERE key='seq_reserved'").fetchone()[0] == 1
