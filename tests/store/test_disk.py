"""The full-disk policy on its own: the reserve, make-room-and-retry, the reservation cool-down
and the rate-limited warning (the queue under a real full disk: test_store_full)."""

import logging
import os
import sqlite3

import pytest

from retrofit_agent.store import disk
from retrofit_agent.store.disk import FULL_RETRIES, DiskPolicy, is_full

MIB = 1024**2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_bytes(path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def test_byte_limit_is_the_bound_or_what_the_reserve_leaves(tmp_path):
    path = tmp_path / "q.db"
    path.write_bytes(bytes(3 * MIB))
    roomy = DiskPolicy(path, min_free_bytes=0)
    assert roomy.byte_limit(1 * MIB) == 1 * MIB  # plenty of space: the configured bound
    greedy = DiskPolicy(path, min_free_bytes=free_bytes(tmp_path) + 100 * MIB)
    assert greedy.byte_limit(10**15) == 3 * MIB  # no spare space: the file may not grow
    spare = 50 * MIB
    tight = DiskPolicy(path, min_free_bytes=free_bytes(tmp_path) - spare)
    limit = tight.byte_limit(10**15)  # the file plus what lies beyond the reserve
    assert abs(limit - (3 * MIB + spare)) < 16 * MIB  # other writers share this filesystem


def test_write_makes_room_between_tries_until_it_fits():
    policy = DiskPolicy("q.db")
    results = iter([False, False, True])
    rooms = []
    assert policy.write(lambda: next(results), lambda: rooms.append(1))
    assert len(rooms) == policy.full_events == 2
    assert policy.write(lambda: True, lambda: rooms.append(1))  # fits at once: no room made
    assert policy.full_events == 2


def test_write_gives_up_after_its_rounds():
    policy = DiskPolicy("q.db")
    attempts, rooms = [], []
    assert not policy.write(lambda: attempts.append(1) or False, lambda: rooms.append(1))
    assert len(attempts) == FULL_RETRIES + 1 and len(rooms) == policy.full_events == FULL_RETRIES


def test_no_reservation_during_the_cool_down():
    clock = Clock()
    policy = DiskPolicy("q.db", clock=clock)
    assert policy.may_reserve()
    policy.reservation_failed()
    clock.now += disk.FULL_COOLDOWN_S - 0.01
    assert not policy.may_reserve()
    clock.now += 0.02
    assert policy.may_reserve()


def test_a_full_disk_is_reported_at_most_once_an_interval(caplog):
    caplog.set_level(logging.WARNING)
    clock = Clock()
    policy = DiskPolicy("q.db", clock=clock)
    for _ in range(5):
        policy.report("disk full", rows=3)
        clock.now += 1
    clock.now += disk.FULL_LOG_INTERVAL_S
    policy.report("disk full again", rows=4)
    assert [r.message for r in caplog.records] == ["disk full", "disk full again"]
    assert caplog.records[1].context == {"path": policy.path, "rows": 4}


def test_is_full_tells_sqlite_full_from_other_errors(tmp_path):
    db = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.DatabaseError) as full:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    with pytest.raises(sqlite3.DatabaseError) as other:
        db.execute("INSERT INTO missing VALUES (1)")
    db.close()
    assert is_full(full.value) and not is_full(other.value)
