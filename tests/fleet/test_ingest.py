"""The reference ingest server: validation, deduplication and status codes, over real HTTP."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.ingest_server import TOKEN, serving
from helpers.observations import observation

from retrofit_agent.fleet import ingest
from retrofit_agent.fleet.ingest import PATH, IngestDatabase, IngestServer

HEADERS = {
    "Content-Type": "application/json",
    "Content-Encoding": "gzip",
    "Authorization": f"Bearer {TOKEN}",
}


def row(seq: int, embedding: bool = True) -> dict:
    obs = json.loads(observation(seq).model_dump_json())
    if not embedding:
        del obs["embedding"]
    return obs


def batch(rows: list[dict], batch_id: str = "b-1", **fields) -> bytes:
    envelope = {"protocol": 1, "batch_id": batch_id, "rows": rows, **fields}
    return gzip.compress(json.dumps(envelope).encode())


def post(url: str, body: bytes, headers: dict[str, str] = HEADERS, path: str = PATH):
    """(status, answer as JSON) of one POST."""
    host_port = url.split("/")[2]
    conn = http.client.HTTPConnection(host_port, timeout=5)
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def server(tmp_path: Path) -> IngestServer:
    database = IngestDatabase(tmp_path / "ingest.db")
    with serving(IngestServer(("127.0.0.1", 0), database, TOKEN)) as server:
        yield server
    database.close()


def test_stores_once_and_acknowledges_every_copy(server):
    status, ack = post(server.url, batch([row(1), row(2, embedding=False)]))
    assert status == 200
    assert ack == {
        "protocol": 1,
        "batch_id": "b-1",
        "accepted": [1, 2],
        "rejected": [],
        "duplicates": 0,
    }
    status, ack = post(server.url, batch([row(2), row(3)], batch_id="b-2"))
    assert (status, ack["accepted"], ack["duplicates"]) == (200, [2, 3], 1)
    assert server.database.stored_keys() == [("cam-1", 1), ("cam-1", 2), ("cam-1", 3)]


def test_a_bad_row_is_rejected_alone(server):
    bad = row(2)
    bad["labels"] = "not a list"
    status, ack = post(server.url, batch([row(1), bad, {**row(3), "extra": 1}, row(4)]))
    assert status == 200 and ack["accepted"] == [1, 4]
    assert [r["seq"] for r in ack["rejected"]] == [2, 3]
    assert ack["rejected"][0]["error"].startswith("labels:")
    assert server.database.stored_keys() == [("cam-1", 1), ("cam-1", 4)]


@pytest.mark.parametrize(
    ("body", "headers", "path", "status", "error"),
    [
        (batch([row(1)]), {**HEADERS, "Authorization": "Bearer nope"}, PATH, 401, "token"),
        (
            batch([row(1)]),
            {k: v for k, v in HEADERS.items() if k != "Authorization"},
            PATH,
            401,
            "token",
        ),
        (batch([row(1)]), HEADERS, "/v2/things", 404, "no such endpoint"),
        (batch([row(1)]), {**HEADERS, "Content-Type": "text/plain"}, PATH, 415, "Content-Type"),
        (batch([row(1)]), {**HEADERS, "Content-Encoding": "br"}, PATH, 415, "Content-Encoding"),
        (b"plain bytes", HEADERS, PATH, 400, "not valid gzip"),
        (batch([row(1)])[:-10], HEADERS, PATH, 400, "truncated"),
        (gzip.compress(b"{not json"), HEADERS, PATH, 400, "not a batch"),
        (batch([row(1)], protocol=2), HEADERS, PATH, 400, "protocol"),
        (batch([]), HEADERS, PATH, 400, "rows"),
        (batch([row(1)], batch_id=""), HEADERS, PATH, 400, "batch_id"),
        (batch([row(1)], extra=True), HEADERS, PATH, 400, "extra"),
        (batch([row(1), row(1)]), HEADERS, PATH, 400, "seq 1 twice"),
        (batch([{**row(1), "seq": "1"}]), HEADERS, PATH, 400, "no integer seq"),
        (batch(["a row"]), HEADERS, PATH, 400, "rows.0"),
    ],
)
def test_refusals_store_nothing(server, body, headers, path, status, error):
    got, answer = post(server.url, body, headers, path)
    assert (got, answer["protocol"]) == (status, 1)
    assert error in answer["error"]
    assert server.database.stored_keys() == []


def test_body_and_inflated_size_are_bounded(server, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_JSON_BYTES", 1000)
    status, answer = post(server.url, batch([row(s) for s in range(1, 30)]))
    assert status == 413 and "inflates to more than 1000 bytes" in answer["error"]
    conn = http.client.HTTPConnection(server.url.split("/")[2], timeout=5)
    conn.putrequest("POST", PATH)
    for name, value in {**HEADERS, "Content-Length": str(10**12)}.items():
        conn.putheader(name, value)
    conn.endheaders()  # announces a terabyte, sends nothing
    response = conn.getresponse()
    assert response.status == 413 and response.getheader("Connection") == "close"
    conn.close()


def test_runs_as_a_program(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    cmd = [
        sys.executable,
        "-m",
        "retrofit_agent.fleet.ingest",
        "--db",
        tmp_path / "in.db",
        "--port",
        "0",
        "--token-file",
        token,
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:"), proc.stderr.read()
            url = line.split()[-1]
            assert post(url, batch([row(1)]))[0] == 200
        finally:
            proc.terminate()
    with contextlib.closing(IngestDatabase(tmp_path / "in.db")) as database:
        assert database.stored_keys() == [("cam-1", 1)]
