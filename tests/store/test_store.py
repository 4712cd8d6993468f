import signal
import subprocess
import sys
import textwrap

import pytest
from helpers.observations import add
from helpers.paths import TESTS

from retrofit_agent.errors import StoreError
from retrofit_agent.store.queue import Store

pytestmark = pytest.mark.device


def test_roundtrip_and_wal(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=10)
    added = add(store, 25)
    store.flush()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert list(store.observations()) == added
    stats = store.stats()
    assert (stats["rows"], stats["pending"]) == (25, 25)
    assert (stats["first_seq"], stats["last_seq"]) == (1, 25)
    store.close()


def test_rows_are_committed_in_batches(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=10, commit_interval_s=3600)
    reader = Store(tmp_path / "q.db")
    add(store, 9)
    assert reader.stats()["rows"] == 0  # buffered, not yet a transaction
    add(store, 1)
    assert reader.stats()["rows"] == 10
    store.close()
    reader.close()


def test_seq_survives_restart_and_a_crash_never_reuses(tmp_path):
    store = Store(tmp_path / "q.db")
    add(store, 5)
    store.close()
    store = Store(tmp_path / "q.db")
    next_seq = store.allocate_seq()
    assert next_seq > 5  # a clean restart skips to the next reserved block, never back
    add(store, 3)  # then "crash": never flushed, never closed
    store.db.close()
    store = Store(tmp_path / "q.db")
    assert store.allocate_seq() > next_seq + 3
    assert [o.seq for o in store.observations()] == [1, 2, 3, 4, 5]
    store.close()


def test_seq_is_not_reused_after_eviction(tmp_path):
    store = Store(tmp_path / "q.db", max_rows=3, commit_every=1)
    add(store, 10)
    store.close()
    store = Store(tmp_path / "q.db", max_rows=3)
    assert store.allocate_seq() > 10
    store.close()


def test_eviction_takes_oldest_uploaded_first_then_oldest(tmp_path):
    store = Store(tmp_path / "q.db", max_rows=10, commit_every=1)
    add(store, 10)
    store.db.execute("UPDATE observations SET state = 'uploaded' WHERE seq IN (4, 7, 9)")
    add(store, 2)  # 12 rows: uploaded 4 and 7 go first
    assert [o.seq for o in store.observations()] == [1, 2, 3, 5, 6, 8, 9, 10, 11, 12]
    add(store, 3)  # uploaded 9, then the oldest pending 1 and 2
    assert [o.seq for o in store.observations()] == [3, 5, 6, 8, 10, 11, 12, 13, 14, 15]
    assert store.evicted == 5
    store.close()


def test_database_stays_under_its_byte_bound(tmp_path):
    bound = 1024**2
    store = Store(tmp_path / "q.db", max_bytes=bound, commit_every=50)
    add(store, 4000, dim=512)  # ~1.4 KiB a row: ~5.5 MiB unbounded
    store.flush()
    stats = store.stats()
    assert stats["used_bytes"] <= bound
    assert 400 < stats["rows"] < 4000 and stats["last_seq"] == 4000
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (tmp_path / "q.db").stat().st_size <= bound * 1.2  # freed pages are reused
    store.close()


def test_open_existing_refuses_a_missing_database(tmp_path):
    with pytest.raises(StoreError, match="no such observation database"):
        Store.open_existing(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_not_a_database(tmp_path):
    path = tmp_path / "q.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="q.db: cannot open observation database"):
        Store(path)


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from helpers.observations import add
    from retrofit_agent.store.queue import Store
    store = Store(sys.argv[1], commit_every=7)
    while True:
        add(store, 7)
        print(store.stats()["last_seq"], flush=True)
    """
)


def test_kill_9_loses_no_committed_row(tmp_path):
    db = tmp_path / "q.db"
    tests_dir = str(TESTS)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), tests_dir], stdout=subprocess.PIPE, text=True
    )
    acknowledged = 0
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 140:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    store = Store(db)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    seqs = [o.seq for o in store.observations()]
    assert seqs[:acknowledged] == list(range(1, acknowledged + 1))
    assert store.allocate_seq() > seqs[-1]
    store.close()
