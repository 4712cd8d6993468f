"""The events table of the queue: written with the batches, open events rewritten, recovered
after a crash as interrupted, uploaded once closed, bounded."""

import contextlib
import sqlite3
import time

import pytest
from helpers.events import event
from helpers.observations import add

from retrofit_agent.event import Event
from retrofit_agent.store.queue import QUARANTINED, UPLOADED, Store

pytestmark = pytest.mark.device


def states(path) -> dict[int, str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT seq, state FROM events"))


def test_events_are_committed_with_the_batch_and_open_ones_rewritten(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=1000)
    current = {"open": [event(10, None)]}
    store.events.open_events = lambda: current["open"]
    store.put_event(event(10, None))
    assert states(store.path) == {}  # buffered, like rows
    store.flush()
    assert states(store.path) == {10: "open"}
    current["open"] = [event(10, None, frames=30)]  # the event went on
    add(store, 1)
    store.flush()
    assert store.events.events()[0].end_seq == 40
    store.put_event(event(10, frames=40))
    current["open"] = []
    store.flush()
    assert states(store.path) == {10: "pending"}
    (closed,) = store.events.events()
    assert (closed.end_seq, closed.end_reason) == (50, "absent")
    store.put_event(event(10, None, frames=89))  # a late open state never reopens a closed event
    store.flush()
    assert store.events.events()[0].end_reason == "absent"
    store.close()


def test_tick_commits_what_waited_commit_interval_s(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=1000, commit_interval_s=0.2)
    add(store, 1)
    store.put_event(event(10, None))
    store.tick()
    assert states(store.path) == {}  # not yet due
    time.sleep(0.25)
    store.tick()  # the keep policy stores rarely: the runtime ticks every frame
    assert states(store.path) == {10: "open"}
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT count(*) FROM observations").fetchone()[0] == 1
    store.close()


def test_open_events_are_closed_as_interrupted_at_the_next_start(tmp_path):
    store = Store(tmp_path / "q.db")
    store.put_event(event(10, None, frames=20))
    store.put_event(event(20, frames=5))
    store.flush()
    store.db.close()  # a crash: nothing more is written

    store = Store(tmp_path / "q.db")
    (recovered,) = store.events.recover()
    assert (recovered.seq, recovered.end_seq, recovered.end_reason) == (10, 30, "interrupted")
    assert states(store.path) == {10: "pending", 20: "pending"}
    assert store.events.recover() == []
    assert store.stats()["events"]["ended"] == {"absent": 1, "interrupted": 1}
    store.close()


def test_only_closed_events_are_uploadable_and_leave_pending_by_set_state(tmp_path):
    store = Store(tmp_path / "q.db")
    for seq, reason in ((10, "absent"), (20, None), (30, "stopped"), (40, "absent")):
        store.put_event(event(seq, reason))
    store.flush()
    assert [seq for seq, _ in store.events.pending(10)] == [10, 30, 40]
    assert [seq for seq, _ in store.events.pending(2, newest_first=True)] == [40, 30]
    store.events.set_state([10], UPLOADED)
    store.events.set_state([30], QUARANTINED)
    store.events.set_state([20], UPLOADED)  # open: not uploadable, left alone
    assert states(store.path) == {10: "uploaded", 20: "open", 30: "quarantined", 40: "pending"}
    assert Event.model_validate_json(store.events.pending(10)[0][1]).seq == 40
    store.close()


def test_the_bound_evicts_uploaded_events_first_and_never_open_ones(tmp_path):
    store = Store(tmp_path / "q.db", max_events=3)
    for seq in (10, 20, 30):
        store.put_event(event(seq))
    store.put_event(event(5, None))  # open, and the oldest
    store.flush()  # four: the oldest closed one goes, the open one stays
    assert states(store.path) == {5: "open", 20: "pending", 30: "pending"}
    store.events.set_state([30], UPLOADED)
    store.put_event(event(40))
    store.flush()  # four again: the uploaded one goes before an older pending one
    assert states(store.path) == {5: "open", 20: "pending", 40: "pending"}
    assert store.events.evicted == 2
    store.close()


@pytest.mark.parametrize("max_events", [1, 2])
def test_the_bound_holds(tmp_path, max_events):
    store = Store(tmp_path / "q.db", max_events=max_events)
    for seq in range(10, 20):
        store.put_event(event(seq))
        store.flush()
    assert len(states(store.path)) == max_events
    store.close()
