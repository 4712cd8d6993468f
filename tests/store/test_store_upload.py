"""The store's side of uploading: pending rows in order, state changes (the byte budget:
test_budget)."""

from helpers.observations import add

from retrofit_agent.store.queue import PENDING, QUARANTINED, UPLOADED, Store


def test_pending_rows_in_either_order_and_only_committed(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=5, commit_interval_s=3600)
    added = add(store, 7)  # 5 committed, 2 still buffered
    oldest = store.pending_rows(3)
    assert [seq for seq, _, _ in oldest] == [1, 2, 3]
    assert [seq for seq, _, _ in store.pending_rows(10, newest_first=True)] == [5, 4, 3, 2, 1]
    assert oldest[0] == (1, added[0].header_json().decode(), added[0].embedding)
    store.close()


def test_set_state_moves_only_pending_rows(tmp_path):
    store = Store(tmp_path / "q.db", commit_every=1)
    add(store, 6)
    store.set_state([1, 2], UPLOADED)
    store.set_state([2, 3], QUARANTINED)  # 2 is already uploaded: it stays so
    store.set_state([99], UPLOADED)  # evicted or unknown: nothing happens
    assert [seq for seq, _, _ in store.pending_rows(10)] == [4, 5, 6]
    stats = store.stats()
    assert (stats["pending"], stats["uploaded"], stats["quarantined"]) == (3, 2, 1)
    assert [o.seq for o in store.observations(QUARANTINED)] == [3]
    assert [o.seq for o in store.observations(PENDING)] == [4, 5, 6]
    store.close()


def test_quarantined_rows_are_evicted_with_pending_ones_oldest_first(tmp_path):
    store = Store(tmp_path / "q.db", max_rows=5, commit_every=1)
    add(store, 5)
    store.set_state([1], QUARANTINED)
    store.set_state([4], UPLOADED)
    add(store, 2)  # uploaded 4 first, then the oldest other row: quarantined 1
    assert [o.seq for o in store.observations()] == [2, 3, 5, 6, 7]
    store.close()
