"""SQLITE_FULL (a full disk, simulated with PRAGMA max_page_count on the store's connection)."""

from test_store import add

from retrofit_agent.store import Store


def page_count(store: Store) -> int:
    return store.db.execute("PRAGMA page_count").fetchone()[0]


def test_full_disk_evicts_uploaded_then_oldest_and_keeps_storing(tmp_path, caplog):
    store = Store(tmp_path / "q.db", commit_every=20)
    add(store, 2000)
    store.flush()
    with store.db.atomic():
        store.db.execute("UPDATE observations SET state = 'uploaded' WHERE seq % 10 = 0")
    full_at = page_count(store)
    store.db.execute(f"PRAGMA max_page_count = {full_at}")  # the disk is full from here on

    add(store, 600)
    store.flush()

    assert store.disk_full >= 1 and store.dropped == 0
    assert page_count(store) <= full_at  # the file never grew past the full disk
    rows = store.db.execute("SELECT seq, state FROM observations ORDER BY seq").fetchall()
    assert [seq for seq, _ in rows[-600:]] == list(range(2001, 2601))  # every new row is there
    assert all(state == "pending" for _, state in rows)  # uploaded rows went first...
    old = [seq for seq, _ in rows if seq <= 2000]
    assert 0 < len(old) < 1800
    assert old == [s for s in range(old[0], 2001) if s % 10]  # ...then the oldest pending
    assert any("database full" in r.message for r in caplog.records)
    store.close()


def test_full_disk_with_nothing_to_evict_drops_the_batch_and_recovers(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=50)
    assert store.allocate_seq() == 1  # reserves a block of seqs first
    store.db.execute(f"PRAGMA max_page_count = {page_count(store)}")
    add(store, 49, dim=2048)  # needs new pages, and nothing is there to evict
    store.flush()
    assert store.dropped == 49 and store.disk_full >= 1  # counted, not raised
    store.db.execute("PRAGMA max_page_count = 1000000")  # space again
    add(store, 50)
    assert store.stats()["rows"] == 50 and store.stats()["first_seq"] == 51
    store.close()
