"""A full disk: SQLITE_FULL (simulated with PRAGMA max_page_count on the store's connection, or
a real small tmpfs) and the free-space reserve that keeps the database from filling the disk."""

import contextlib
import os
import sqlite3
import subprocess
import time

import pytest
from helpers.agent_process import AgentProcess, config_text
from helpers.observations import add

from retrofit_agent.errors import StoreFull
from retrofit_agent.store.queue import SEQ_BLOCK, Store

MIB = 1024**2


def page_count(store: Store) -> int:
    return store.db.execute("PRAGMA page_count").fetchone()[0]


@pytest.fixture
def small_filesystem(tmp_path):
    """`mount(mib)`: a real tmpfs of that size (needs root, as in CI; skipped otherwise)."""
    mounted = []

    def mount(mib: int):
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        options = f"size={mib}m"
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if result.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory):
    """Write a file until the filesystem is full; returns its path."""
    path = directory / "filler"
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(4096))
    return path


def free_bytes(path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def test_full_disk_evicts_uploaded_then_oldest_and_keeps_storing(tmp_path, caplog):
    store = Store(tmp_path / "q.db", commit_every=20)
    add(store, 2000)
    store.flush()
    store.db.execute("UPDATE observations SET state = 'uploaded' WHERE seq % 10 = 0")
    full_at = page_count(store)
    store.db.execute(f"PRAGMA max_page_count = {full_at}")  # the disk is full from here on

    add(store, 600)
    store.flush()

    assert store.disk.full_events >= 1 and store.dropped == 0
    assert page_count(store) <= full_at  # the file never grew past the full disk
    rows = store.db.execute("SELECT seq, state FROM observations ORDER BY seq").fetchall()
    assert [seq for seq, _ in rows[-600:]] == list(range(2001, 2601))  # every new row is there
    assert all(state == "pending" for _, state in rows)  # uploaded rows went first...
    old = [seq for seq, _ in rows if seq <= 2000]
    assert 0 < len(old) < 1800
    assert old == [s for s in range(old[0], 2001) if s % 10]  # ...then the oldest pending
    assert store.evicted == 2000 - len(old)
    assert [r.message for r in caplog.records] == [
        "disk full: evicted the oldest rows to make room"
    ]
    store.close()


def test_full_disk_with_nothing_to_evict_drops_the_batch_and_recovers(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=50)
    assert store.allocate_seq() == 1  # reserves a block of seqs first
    store.db.execute(f"PRAGMA max_page_count = {page_count(store)}")
    add(store, 49, dim=2048)  # needs new pages, and nothing is there to evict
    store.flush()
    assert store.dropped == 49 and store.disk.full_events >= 1  # counted, not raised
    store.db.execute("PRAGMA max_page_count = 1000000")  # space again
    add(store, 50)
    assert store.stats()["rows"] == 50 and store.stats()["first_seq"] == 51
    store.close()


def test_no_seq_without_a_reservation_on_disk(small_filesystem, monkeypatch):
    monkeypatch.setattr("retrofit_agent.store.disk.FULL_COOLDOWN_S", 0.5)
    fs = small_filesystem(1)
    store = Store(fs / "q.db")
    seqs = [store.allocate_seq() for _ in range(SEQ_BLOCK)]  # the first block is on disk
    filler = fill(fs)  # another program takes every byte that is left
    with pytest.raises(StoreFull, match="disk full, cannot reserve sequence numbers"):
        store.allocate_seq()
    with pytest.raises(StoreFull):  # no new attempt during the cool-down: no write churn
        store.allocate_seq()
    filler.unlink()
    time.sleep(0.6)  # the cool-down is over
    assert store.allocate_seq() == seqs[-1] + 1
    store.close()
    with contextlib.closing(Store(fs / "q.db")) as reopened:
        assert reopened.allocate_seq() > seqs[-1] + 1


def test_the_database_leaves_the_filesystem_its_reserve(small_filesystem):
    fs = small_filesystem(32)
    reserve = 12 * MIB
    store = Store(fs / "q.db", commit_every=50, min_free_bytes=reserve)
    lowest = free_bytes(fs)
    for _ in range(240):  # ~2.5 KiB a row: 12000 rows would need ~30 MiB
        add(store, 50, dim=1024)
        lowest = min(lowest, free_bytes(fs))
    store.flush()
    assert store.disk.full_events == store.dropped == 0  # never ran into a full disk
    assert store.evicted > 0 and store.stats()["last_seq"] == 12000
    # what can still go below the reserve: the WAL (up to its 1000-page checkpoint) and a batch
    assert lowest >= reserve - 5 * MIB
    seqs = [o.seq for o in store.observations()]
    assert seqs == list(range(seqs[0], 12001))  # the oldest went first
    store.close()


def test_the_service_rides_out_a_full_disk(small_filesystem, tmp_path, tiny_bundle):
    fs = small_filesystem(16)
    config = config_text(tmp_path, tiny_bundle).replace(
        str(tmp_path / "obs.db"), str(fs / "obs.db")
    )
    config = config.replace("commit_every = 5", "commit_every = 5\nmin_free_bytes = 0")
    agent = AgentProcess(tmp_path, config, fps=200)
    try:
        agent.wait_for_log(r"committed rows=")
        filler = fill(fs)  # another program fills the disk while the agent writes
        agent.wait_metric("retrofit_agent_queue_disk_full_total", 1)
        agent.wait_metric("retrofit_agent_queue_dropped_total", 1)
        metrics = agent.wait_metric("retrofit_agent_frames_skipped_total", 1)  # seqs ran out
        assert agent.proc.poll() is None  # still running: no crash, no restart
        full_lines = [line for line in agent.lines if "disk full" in line]
        assert 1 <= len(full_lines) <= 2, full_lines  # reported, not once per batch

        filler.unlink()  # space again: the agent stores again by itself
        mark = len(agent.lines)
        first = int(agent.wait_for_log(r"committed rows=\d+ first_seq=(\d+)", start=mark)[1])
        assert first > metrics["retrofit_agent_queue_rows"]
        assert agent.stop() == 0
    finally:
        agent.close()
    with contextlib.closing(sqlite3.connect(fs / "obs.db")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM observations WHERE seq >= ?", [first]).fetchone()[
            0
        ]
