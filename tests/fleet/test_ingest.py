"""The ingest app over real HTTP, on each store: idempotency, validation, statuses, binding."""

from __future__ import annotations

import gzip
import http.client
import json

import pytest
from helpers.events import event
from helpers.ingest_server import DIM, EVER, TOKEN, backend
from helpers.observations import observation

from retrofit_agent.fleet.app import OBSERVATIONS
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.store import ObservationQuery, open_store

OTHER_TOKEN = "token-of-cam-2-0123456789"
DEVICES = {"cam-1": TOKEN, "cam-2": OTHER_TOKEN}
HEADERS = {
    "Content-Type": "application/json",
    "Content-Encoding": "gzip",
    "Authorization": f"Bearer {TOKEN}",
}


def row(seq: int, device: str = "cam-1", embedding: bool = True, **fields) -> dict:
    obs = json.loads(observation(seq).model_dump_json())
    if not embedding:
        del obs["embedding"]
    return {**obs, "device_id": device, **fields}


def batch(rows: list[dict], batch_id: str = "b-1", **fields) -> bytes:
    envelope = {"protocol": 1, "batch_id": batch_id, "rows": rows, **fields}
    return gzip.compress(json.dumps(envelope).encode())


def post(url: str, body: bytes, headers: dict[str, str] = HEADERS, path: str = OBSERVATIONS):
    """(status, answer as JSON) of one POST."""
    conn = http.client.HTTPConnection(url.split("/")[2], timeout=10)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def server(database_url):
    store = open_store(database_url)
    limits = Limits(embedding_dim=DIM, max_age_days=36_500, max_rows=50)
    with backend(store, limits, DEVICES) as running:
        yield running
    store.close()


def test_stores_once_and_acknowledges_every_copy(server):
    status, ack = post(server.url, batch([row(1), row(2, embedding=False)]))
    assert (status, ack) == (
        200,
        {
            "protocol": 1,
            "batch_id": "b-1",
            "accepted": [1, 2],
            "rejected": [],
            "duplicates": 0,
            "events_accepted": [],
            "events_rejected": [],
            "event_duplicates": 0,
        },
    )
    status, ack = post(server.url, batch([row(2), row(3)], batch_id="b-2"))
    assert (status, ack["accepted"], ack["duplicates"]) == (200, [2, 3], 1)
    assert server.stored_keys() == [("cam-1", 1), ("cam-1", 2), ("cam-1", 3)]


def test_a_bad_row_is_rejected_alone(server):
    bad = row(2, labels="not a list")
    status, ack = post(server.url, batch([row(1), bad, {**row(3), "extra": 1}, row(4)]))
    assert status == 200 and ack["accepted"] == [1, 4]
    assert [r["seq"] for r in ack["rejected"]] == [2, 3]
    assert ack["rejected"][0]["error"].startswith("labels:")
    assert server.stored_keys() == [("cam-1", 1), ("cam-1", 4)]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"seq": 2**63}, "seq: 9223372036854775808 is not within 1..9223372036854775807"),
        ({"seq": 0}, "seq: 0 is not within"),
        ({"schema_version": 999}, "schema_version: 999 is unknown (known: [1, 2])"),
        ({"embedding": "AAAA"}, f"embedding: 3 bytes, not {2 * DIM} ({DIM} float16)"),
        ({"device_id": "cam-2"}, "device_id: 'cam-2' is not the device of this token"),
        ({"captured_utc": "2026-11-29T12:00:00"}, "captured_utc: has no time zone"),
        ({"captured_utc": "1900-01-01T00:00:00Z"}, "days old or in the future"),
    ],
)
def test_rows_the_type_cannot_refuse_are_rejected_and_not_stored(server, fields, error):
    status, ack = post(server.url, batch([row(1), {**row(5), **fields}]))
    assert status == 200 and ack["accepted"] == [1]
    ((rejected,),) = [ack["rejected"]]
    assert rejected["seq"] == fields.get("seq", 5) and error in rejected["error"]
    assert server.stored_keys() == [("cam-1", 1)]


def test_forged_rows_cannot_preempt_another_devices_rows(server):
    """Before: cam-2's token stored 50 rows as cam-1, and cam-1's real rows were then
    acknowledged as duplicates and lost."""
    forged = [row(seq, device="cam-1", source="forged") for seq in range(1, 51)]
    status, ack = post(
        server.url, batch(forged), {**HEADERS, "Authorization": f"Bearer {OTHER_TOKEN}"}
    )
    assert status == 200 and ack["accepted"] == [] and len(ack["rejected"]) == 50
    status, ack = post(server.url, batch([row(seq) for seq in range(1, 51)], "b-2"))
    assert (status, ack["accepted"], ack["duplicates"]) == (200, list(range(1, 51)), 0)
    stored = [
        json.loads(h)["source"] for _, h in server.store.observations(ObservationQuery(*EVER))
    ]
    assert len(stored) == 50 and "forged" not in stored


def test_the_same_seq_from_two_devices_is_not_seq_twice(server):
    status, ack = post(server.url, batch([row(7), row(7, device="cam-2")]))
    assert status == 200 and ack["accepted"] == [7]
    assert ack["rejected"] == [
        {"seq": 7, "error": "device_id: 'cam-2' is not the device of this token"}
    ]
    assert server.stored_keys() == [("cam-1", 7)]


def test_revocation_takes_effect_at_the_next_request(server):
    assert post(server.url, batch([row(1)]))[0] == 200
    assert server.store.revoke_device("cam-1")
    status, answer = post(server.url, batch([row(2)], "b-2"))
    assert (status, answer["error"]) == (401, "unknown or revoked device token")
    assert server.stored_keys() == [("cam-1", 1)]


@pytest.mark.parametrize(
    ("body", "headers", "path", "status", "error"),
    [
        (batch([row(1)]), {**HEADERS, "Authorization": "Bearer nope"}, OBSERVATIONS, 401, "token"),
        (batch([row(1)]), {**HEADERS, "Authorization": ""}, OBSERVATIONS, 401, "token"),
        (batch([row(1)]), HEADERS, "/v2/things", 404, "no such endpoint"),
        (
            batch([row(1)]),
            {**HEADERS, "Content-Type": "text/plain"},
            OBSERVATIONS,
            415,
            "Content-Type",
        ),
        (
            batch([row(1)]),
            {**HEADERS, "Content-Encoding": "br"},
            OBSERVATIONS,
            415,
            "Content-Encoding",
        ),
        (b"plain bytes", HEADERS, OBSERVATIONS, 400, "not valid gzip"),
        (batch([row(1)])[:-10], HEADERS, OBSERVATIONS, 400, "truncated"),
        (batch([row(1)]) + b"more", HEADERS, OBSERVATIONS, 400, "after the end"),
        (gzip.compress(b"{not json"), HEADERS, OBSERVATIONS, 400, "not a batch"),
        (batch([row(1)], protocol=2), HEADERS, OBSERVATIONS, 400, "protocol"),
        (batch([]), HEADERS, OBSERVATIONS, 400, "rows"),
        (batch([row(1)], batch_id=""), HEADERS, OBSERVATIONS, 400, "batch_id"),
        (batch([row(1)], extra=True), HEADERS, OBSERVATIONS, 400, "extra"),
        (batch([row(1)], events=["an event"]), HEADERS, OBSERVATIONS, 400, "events.0"),
        (batch([], events=[]), HEADERS, OBSERVATIONS, 400, "rows and events"),
        (batch([row(1), row(1)]), HEADERS, OBSERVATIONS, 400, "seq 1 twice"),
        (batch([{**row(1), "seq": "1"}]), HEADERS, OBSERVATIONS, 400, "no integer seq"),
        (batch(["a row"]), HEADERS, OBSERVATIONS, 400, "rows.0"),
        (
            batch([row(s) for s in range(1, 52)]),
            HEADERS,
            OBSERVATIONS,
            413,
            "51 rows, this server takes 50",
        ),
    ],
)
def test_refusals_store_nothing(server, body, headers, path, status, error):
    got, answer = post(server.url, body, headers, path)
    assert (got, answer["protocol"]) == (status, 1)
    assert error in answer["error"]
    assert server.stored_keys() == []


def event_json(number: int, **fields) -> dict:
    return {**json.loads(event(number).model_dump_json()), **fields}


def test_events_are_stored_once_and_acknowledged_under_their_own_seqs(server):
    status, ack = post(server.url, batch([row(1)], events=[event_json(100), event_json(101)]))
    assert status == 200 and ack["accepted"] == [1]
    assert (ack["events_accepted"], ack["events_rejected"], ack["event_duplicates"]) == (
        [100, 101],
        [],
        0,
    )
    status, ack = post(server.url, batch([], "b-2", events=[event_json(101), event_json(102)]))
    assert (status, ack["accepted"], ack["events_accepted"], ack["event_duplicates"]) == (
        200,
        [],
        [101, 102],
        1,
    )
    stored = [json.loads(e) for e in server.store.events(ObservationQuery(*EVER))]
    assert [e["seq"] for e in stored] == [100, 101, 102]
    assert stored[0] == event_json(100)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"end_reason": None}, "an open event"),
        ({"device_id": "cam-2"}, "device_id: 'cam-2' is not the device of this token"),
        ({"schema_version": 2}, "schema_version: 2 is unknown (known: [1])"),
        ({"seq": 0}, "seq: 0 is not within"),
        ({"start_utc": "1900-01-01T00:00:00Z"}, "start_utc: 1900-01-01T00:00:00+00:00 is over"),
        ({"frames": "many"}, "frames: Input should be a valid integer"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_events_are_rejected_alone(server, fields, error):
    events = [event_json(100), event_json(101, **fields)]
    status, ack = post(server.url, batch([row(1)], events=events))
    assert status == 200 and (ack["accepted"], ack["events_accepted"]) == ([1], [100])
    ((rejected,),) = [ack["events_rejected"]]
    assert rejected["seq"] == fields.get("seq", 101) and error in rejected["error"]
    assert [json.loads(e)["seq"] for e in server.store.events(ObservationQuery(*EVER))] == [100]


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([event_json(100), event_json(100)], "events.1: seq 100 twice in one batch"),
        ([{**event_json(100), "seq": "100"}], "events.0: no integer seq"),
    ],
)
def test_malformed_events_refuse_the_batch(server, events, error):
    status, answer = post(server.url, batch([row(1)], events=events))
    assert (status, answer["error"]) == (400, error)
    assert server.stored_keys() == [] and list(server.store.events(ObservationQuery(*EVER))) == []
