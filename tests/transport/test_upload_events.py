"""Label events through the uploader to the fleet app: once closed, in the rows' batches,
idempotent, and a server from before events costs the events, not the rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.events import event
from helpers.ingest_server import TOKEN, Backend, FaultyServer, backend, serving
from helpers.observations import add

from retrofit_agent.config import UploadConfig
from retrofit_agent.event import Event
from retrofit_agent.fleet.sqlite_store import SqliteStore
from retrofit_agent.fleet.store import ObservationQuery
from retrofit_agent.store.queue import Store
from retrofit_agent.transport.protocol import Ack
from retrofit_agent.transport.upload import Payload, Uploader, read_ack

EVER = ObservationQuery(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
ROWS, EVENTS = 30, 12


@pytest.fixture
def queue(tmp_path: Path) -> Store:
    """30 rows (seqs 1-30), 12 closed events (seqs 1001...) and one still open."""
    store = Store(tmp_path / "queue.db", commit_every=1000)
    add(store, ROWS)
    for seq in range(1001, 1001 + EVENTS):
        store.put_event(event(seq))
    store.put_event(event(2000, None))
    store.flush()
    yield store
    store.close()


@pytest.fixture
def database(tmp_path: Path) -> Backend:
    store = SqliteStore(tmp_path / "ingest.db")
    with backend(store) as running:
        yield running
    store.close()


def config(url: str, tmp_path: Path, **overrides) -> UploadConfig:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    settings = dict(
        endpoint=url, token_file=token, timeout_s=2.0, backoff_base_s=0.02,
        backoff_cap_s=0.1, give_up_after=100, batch_rows=10,
    )  # fmt: skip
    return UploadConfig(**{**settings, **overrides})


def event_states(store: Store) -> dict[int, str]:
    return dict(store.db.execute("SELECT seq, state FROM events"))


def test_rows_and_closed_events_are_uploaded_once_open_ones_stay(queue, database, tmp_path):
    uploader = Uploader(config(database.url, tmp_path), queue)
    stats = uploader.drain(once=True)
    uploader.close()
    assert (stats.uploaded, stats.events_uploaded, stats.stopped) == (ROWS, EVENTS, "empty")
    assert stats.requests == -(-(ROWS + EVENTS) // 10)  # events share the batches, first
    stored = [Event.model_validate_json(e) for e in database.store.events(EVER)]
    assert stored == queue.events.events()[:EVENTS]  # the same events, field for field
    assert set(event_states(queue).values()) == {"uploaded", "open"}
    assert event_states(queue)[2000] == "open"
    assert len(database.stored_keys()) == ROWS


def test_a_lost_answer_resends_events_that_the_server_counts_as_duplicates(
    queue, database, tmp_path
):
    with serving(FaultyServer(database, ["drop_ack"])) as server:
        uploader = Uploader(config(server.url, tmp_path), queue)
        stats = uploader.drain(once=True)
        uploader.close()
    assert (stats.uploaded, stats.events_uploaded) == (ROWS, EVENTS)
    # the first batch held the first 10 events: sent again, acknowledged, not stored twice
    assert (stats.failures, stats.event_duplicates, stats.duplicates) == (1, 10, 0)
    assert len(list(database.store.events(EVER))) == EVENTS  # stored once


def test_a_server_from_before_events_costs_the_events_not_the_rows(queue, database, tmp_path):
    with serving(FaultyServer(database, refuse_events=True)) as server:
        uploader = Uploader(config(server.url, tmp_path), queue)
        stats = uploader.drain(once=True)
        uploader.close()
    assert (stats.uploaded, stats.events_uploaded) == (ROWS, 0)
    assert stats.events_quarantined == EVENTS and stats.quarantined == 0
    states = event_states(queue)
    assert states.pop(2000) == "open" and set(states.values()) == {"quarantined"}


def test_an_ack_for_events_that_were_not_sent_is_refused():
    payload = Payload("b", [1, 2], b"", event_seqs=(10,))
    ack = Ack(protocol=1, batch_id="b", accepted=[1, 2], events_accepted=[11])
    with pytest.raises(ValueError, match=r"names events that were not sent: \[11\]"):
        read_ack(ack.model_dump_json().encode(), payload)
    events_only = Payload("b", [], b"", event_seqs=(10,))
    ack = Ack(protocol=1, batch_id="b", accepted=[], events_accepted=[10])
    assert read_ack(ack.model_dump_json().encode(), events_only).events_accepted == [10]
