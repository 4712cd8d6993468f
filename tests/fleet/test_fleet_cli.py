"""`retrofit-fleet` device, campaign and query commands on each store, and campaign serving."""

from __future__ import annotations

import base64
import http.client
import json
import re
from datetime import timedelta

import numpy as np
import pytest
from helpers.events import T0, event
from helpers.fleet_process import add_device, fleet
from helpers.ingest_server import TOKEN, backend
from helpers.observations import observation, with_labels

from retrofit_agent.fleet.app import CAMPAIGNS
from retrofit_agent.fleet.store import StoredEvent, StoredRow, open_store
from retrofit_agent.fleet.tokens import token_hash
from retrofit_agent.observation import encode_embedding
from retrofit_agent.transport.upload import BEARER_TOKEN


def test_devices_add_list_revoke(database_url):
    token = add_device(database_url, "cam-7")
    assert BEARER_TOKEN.fullmatch(token) and len(token) >= 43  # what the device accepts
    again = fleet("device", "add", "cam-7", "--database", database_url)
    assert again.returncode == 78 and again.stdout == "" and "exists" in again.stderr
    listed = fleet("device", "list", "--database", database_url, check_ok=True).stdout
    assert [json.loads(line)["device_id"] for line in listed.splitlines()] == ["cam-7"]
    fleet("device", "revoke", "cam-7", "--database", database_url, check_ok=True)
    twice = fleet("device", "revoke", "cam-7", "--database", database_url)
    assert twice.returncode == 67 and "no such device" in twice.stderr
    store = open_store(database_url)
    try:
        assert store.devices()[0].revoked_utc is not None
        new_token = add_device(database_url, "cam-7")  # a revoked device gets a new token
        assert store.device_for_token(token_hash(token)) is None
        assert store.device_for_token(token_hash(new_token)) == "cam-7"
    finally:
        store.close()


def get_campaigns(
    host_port: str, etag: str | None = None, token: str = TOKEN
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host_port, timeout=10)
    headers = {"Authorization": f"Bearer {token}", **({"If-None-Match": etag} if etag else {})}
    conn.request("GET", CAMPAIGNS, headers=headers)
    return conn.getresponse()


def test_campaigns_are_served_with_an_etag(database_url, tmp_path):
    store = open_store(database_url)
    with backend(store) as server:
        host = server.url.split("/")[2]
        empty = get_campaigns(host)
        assert (empty.status, json.loads(empty.read())) == (200, {"protocol": 1, "campaigns": []})
        document = tmp_path / "rain.json"
        document.write_text('{"name": "rain at night", "labels": ["rain"]}')
        added = fleet("campaign", "add", document, "--database", database_url, check_ok=True)
        sha256 = added.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{64}", sha256)
        first = get_campaigns(host, empty.getheader("ETag"))
        assert first.status == 200
        assert json.loads(first.read())["campaigns"] == [
            {"sha256": sha256, "document": {"name": "rain at night", "labels": ["rain"]}}
        ]
        unchanged = get_campaigns(host, first.getheader("ETag"))
        assert (unchanged.status, unchanged.read()) == (304, b"")
        fleet("campaign", "remove", sha256, "--database", database_url, check_ok=True)
        assert get_campaigns(host, first.getheader("ETag")).status == 200
        assert get_campaigns(host, token="not-a-device").status == 401
    store.close()
    (tmp_path / "list.json").write_text("[1, 2]")
    refused = fleet("campaign", "add", tmp_path / "list.json", "--database", database_url)
    assert refused.returncode == 78 and "a campaign is a JSON object, not list" in refused.stderr


@pytest.fixture
def filled(database_url):
    """cam-1 and cam-2, 20 rows each (rain); cam-2's even seqs carry the label snow instead."""
    store = open_store(database_url)
    rows = []
    for device in ("cam-1", "cam-2"):
        for seq in range(1, 21):
            obs = observation(seq)
            if device == "cam-2" and seq % 2 == 0:
                obs = with_labels(seq, ("weather", "snow"))
            obs = obs.model_copy(update={"device_id": device})
            rows.append(StoredRow(device, seq, obs.captured_utc, obs.header_json().decode(),
                                  obs.embedding))  # fmt: skip
    store.store_rows("b", rows)
    store.close()
    return database_url


WINDOW = ["--since", "2026-11-29T00:00:00Z", "--until", "2026-11-30T00:00:00Z"]


def test_query_observations_by_device_time_and_label(filled):
    def query(*args: str) -> list[tuple[str, int]]:
        out = fleet("query", "observations", "--database", filled, *args, check_ok=True).stdout
        return [(r["device_id"], r["seq"]) for r in map(json.loads, out.splitlines())]

    assert len(query(*WINDOW)) == 40
    assert query(*WINDOW, "--device", "cam-1", "--limit", "3") == [("cam-1", s) for s in (1, 2, 3)]
    assert query(*WINDOW, "--label", "snow") == [("cam-2", s) for s in range(2, 21, 2)]
    assert len(query(*WINDOW, "--label", "rain")) == 30
    assert query("--since", "2026-11-30T00:00:00Z", "--until", "2026-12-01T00:00:00Z") == []


def test_query_events_by_device_time_and_label(database_url):
    store = open_store(database_url)
    stored = []
    for device in ("cam-1", "cam-2"):
        for seq, label in ((1, "rain"), (2, "snow"), (3, "rain")):
            e = event(seq, label=label, device_id=device, start=T0 + timedelta(hours=seq))
            stored.append(StoredEvent(device, seq, e.start_utc, e.model_dump_json()))
    assert store.store_events("b", stored) == 6 and store.store_events("b", stored[:2]) == 0
    store.close()

    def query(*args: str) -> list[tuple[str, int]]:
        out = fleet("query", "events", "--database", database_url, *args, check_ok=True).stdout
        return [(e["device_id"], e["seq"]) for e in map(json.loads, out.splitlines())]

    by_start = [(d, s) for s in (1, 2, 3) for d in ("cam-1", "cam-2")]
    assert query(*WINDOW) == by_start
    assert query(*WINDOW, "--device", "cam-2", "--label", "rain") == [("cam-2", 1), ("cam-2", 3)]
    assert query(*WINDOW, "--limit", "1") == [("cam-1", 1)]
    assert query("--since", "2026-11-29T14:00:00Z", "--until", "2026-11-29T15:00:00Z") == [
        ("cam-1", 2),
        ("cam-2", 2),
    ]


def test_query_nearest_neighbours_of_an_embedding(filled, tmp_path):
    target = observation(7).embedding_array().astype(np.float32)
    near = encode_embedding(target + 0.01)
    (tmp_path / "q.f16").write_bytes(near)
    by_file = fleet("query", "nearest", "--database", filled, *WINDOW, "--embedding",
                    tmp_path / "q.f16", "-k", "3", check_ok=True)  # fmt: skip
    found = [json.loads(line) for line in by_file.stdout.splitlines()]
    assert len(found) == 3 and {f["seq"] for f in found[:2]} == {7}  # both devices' seq 7
    assert found[0]["similarity"] > 0.99 > found[2]["similarity"]
    b64 = base64.b64encode(near).decode()
    by_b64 = fleet("query", "nearest", "--database", filled, *WINDOW, "--embedding-b64", b64,
                   "--device", "cam-2", "-k", "1", check_ok=True)  # fmt: skip
    assert [(r["device_id"], r["seq"]) for r in map(json.loads, by_b64.stdout.splitlines())] == [
        ("cam-2", 7)
    ]
    wrong = fleet("query", "nearest", "--database", filled, *WINDOW, "--embedding-b64", "AAAA")
    assert wrong.returncode == 78 and "embedding: 3 bytes" in wrong.stderr


def test_database_errors_are_one_line_with_their_exit_code(pg_url, tmp_path):
    empty = fleet("query", "observations", "--database", pg_url)
    assert empty.returncode == 78 and "no fleet tables" in empty.stderr
    down = fleet("device", "list", "--database", "postgresql://fleet@127.0.0.1:1/fleet")
    assert down.returncode == 69 and len(down.stderr.strip().splitlines()) == 1  # retried later
    bad = fleet("device", "list", "--database", "mysql://x")
    assert bad.returncode == 78 and "not sqlite:///PATH or postgresql://" in bad.stderr
    absent = fleet("query", "observations", "--database", f"sqlite:///{tmp_path / 'none.db'}")
    assert absent.returncode == 78 and "no such fleet database" in absent.stderr
