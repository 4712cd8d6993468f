"""The limits at the edge, each attack on the reference server as a regression test.

Measured on the http.server reference before this backend: the bomb below took it to 9 GB
and aborted it, 150 idle connections made 152 threads, a slow body held a thread for ever,
and `100 Continue` went out before the token was checked.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
import zlib
from pathlib import Path

import pytest
from helpers.fleet_process import FleetServer, add_device, fleet, sqlite_url
from helpers.held_server import holding
from helpers.ingest_server import DIM, TOKEN, backend
from helpers.observations import observation

from retrofit_agent.fleet.app import OBSERVATIONS
from retrofit_agent.fleet.limits import Inflater, Limits, Refused
from retrofit_agent.fleet.sqlite_store import SqliteStore


def bomb(elements: int) -> bytes:
    """A gzip batch of one row whose labels are a list of `elements` zeros, compressed as it
    is made (66 million elements: 132 MB of JSON in 126 KiB)."""
    row = json.loads(observation(1).model_dump_json())
    head = json.dumps({"protocol": 1, "batch_id": "bomb", "rows": [{**row, "labels": "X"}]})
    before, after = head.encode().split(b'"X"')
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [deflate.compress(before + b"[")]
    million = b"0," * 1_000_000
    for _ in range(elements // 1_000_000):
        parts.append(deflate.compress(million))
    parts.append(deflate.compress(b"0," * (elements % 1_000_000) + b"0]" + after))
    return b"".join([*parts, deflate.flush()])


def headers(token: str = TOKEN, **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Authorization": f"Bearer {token}",
        **extra,
    }


def post(host_port: str, body: bytes, head: dict[str, str] | None = None):
    conn = http.client.HTTPConnection(host_port, timeout=30)
    try:
        conn.request("POST", OBSERVATIONS, body, head or headers())
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Connection")
    finally:
        conn.close()


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture
def served(tmp_path):
    """`retrofit-fleet serve` with one worker (so its memory and threads are one process)."""
    database = sqlite_url(tmp_path / "fleet.db")
    token = add_device(database, "cam-1")
    args = ["--database", database, "--port", 0, "--workers", 1, "--embedding-dim", DIM]
    with FleetServer(*args, "--max-age-days", 36_500) as server:
        server.token = token
        yield server


def test_a_gzip_bomb_of_a_huge_list_is_refused_without_taking_memory(served):
    body = bomb(66_000_000)
    assert len(body) < 130 * 1024
    before = proc_status(served.proc.pid, "VmRSS")
    started = time.monotonic()
    status, answer, connection = post(served.url.split("/")[2], body, headers(served.token))
    assert (status, connection) == (413, "close")
    assert answer["error"] == "batch holds more than 300000 JSON values"
    assert time.monotonic() - started < 5
    grown_kib = proc_status(served.proc.pid, "VmHWM") - before
    assert grown_kib < 64 * 1024, f"the server grew by {grown_kib} KiB"


def test_a_small_list_with_many_values_is_refused_before_parsing(served):
    status, answer, _ = post(served.url.split("/")[2], bomb(400_000), headers(served.token))
    assert status == 413 and "more than 300000 JSON values" in answer["error"]


def test_idle_connections_cost_no_threads(served):
    host, port = served.url.split("/")[2].split(":")
    threads = proc_status(served.proc.pid, "Threads")
    idle = [socket.create_connection((host, int(port))) for _ in range(150)]
    try:
        time.sleep(0.5)
        assert proc_status(served.proc.pid, "Threads") <= threads + 2
        row = json.loads(observation(1).model_dump_json())
        body = gzip.compress(json.dumps({"protocol": 1, "batch_id": "b", "rows": [row]}).encode())
        assert post(f"{host}:{port}", body, headers(served.token))[0] == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_connection_without_headers_is_closed_at_the_deadline(tmp_path):
    database = sqlite_url(tmp_path / "fleet.db")
    add_device(database, "cam-1")
    args = ["--database", database, "--port", 0, "--workers", 1, "--embedding-dim", DIM]
    with FleetServer(*args, "--deadline-s", 1) as server:
        host, port = server.url.split("/")[2].split(":")
        silent = socket.create_connection((host, int(port)), timeout=10)
        trickle = socket.create_connection((host, int(port)), timeout=10)
        trickle.sendall(b"POST /v1/observations HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert silent.recv(100) == b"" and trickle.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 3
        silent.close()
        trickle.close()


@pytest.fixture
def app(tmp_path):
    store = SqliteStore(tmp_path / "fleet.db")
    limits = Limits(embedding_dim=DIM, max_age_days=36_500, deadline_s=1.0, max_body_bytes=10_000)
    with backend(store, limits) as running:
        yield running.url.split("/")[2]
    store.close()


def raw_request(host_port: str, head: str, body: bytes = b"", wait_s: float = 5.0) -> bytes:
    """What the server answers to a hand-written request (headers, then maybe some body)."""
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head.encode() + body)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def request_head(token: str, length: int, expect: bool = False) -> str:
    lines = [
        f"POST {OBSERVATIONS} HTTP/1.1",
        "Host: test",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        f"Authorization: Bearer {token}",
        *(["Expect: 100-continue"] if expect else []),
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def test_the_token_is_checked_before_100_continue(app):
    refused = raw_request(app, request_head("wrong-token", 500, expect=True))
    assert refused.startswith(b"HTTP/1.1 401 ")
    accepted = raw_request(app, request_head(TOKEN, 500, expect=True))
    assert accepted.startswith(b"HTTP/1.1 100 Continue")


def test_a_slow_body_is_cut_off_at_the_deadline(app):
    started = time.monotonic()
    answer = raw_request(app, request_head(TOKEN, 5000), body=b'{"protocol": 1')
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"body not received within 1 s" in answer
    assert 0.9 < time.monotonic() - started < 4


def test_a_body_announced_too_large_is_refused_before_it_is_read(app):
    answer = raw_request(app, request_head(TOKEN, 10**12))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()


def test_requests_beyond_the_slots_wait_then_get_503(tmp_path):
    """One slot, held by a request whose commit does not return: the next waits the deadline."""
    release = threading.Event()
    store = holding(SqliteStore(tmp_path / "fleet.db"), tmp_path / "committed", release)
    limits = Limits(embedding_dim=DIM, max_age_days=36_500, deadline_s=1.0, max_inflight=1)
    body = gzip.compress(json.dumps({"protocol": 1, "batch_id": "b", "rows": [
        json.loads(observation(1).model_dump_json())]}).encode())  # fmt: skip
    with backend(store, limits) as server:
        host = server.url.split("/")[2]
        first = threading.Thread(target=post, args=(host, body))
        first.start()
        while not (tmp_path / "committed").exists():
            time.sleep(0.01)
        started = time.monotonic()
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("POST", OBSERVATIONS, body, headers())
        busy = conn.getresponse()
        assert (busy.status, busy.getheader("Retry-After")) == (503, "1")
        assert json.loads(busy.read())["error"] == "busy: every ingest slot is taken"
        assert 0.9 < time.monotonic() - started < 3
        release.set()
        first.join(10)
    store.close()


def test_no_device_no_server(tmp_path):
    result = fleet("serve", "--database", sqlite_url(tmp_path / "f.db"), "--embedding-dim", 8)
    assert result.returncode == 78
    assert "no device has a token; add one first (retrofit-fleet device add" in result.stderr


def test_the_inflater_counts_values_as_it_inflates():
    limits = Limits(embedding_dim=DIM, max_json_values=10)
    inflater = Inflater(limits, "identity")
    inflater.feed(b"[1,2,3,4,5]")
    with pytest.raises(Refused, match="more than 10 JSON values"):
        inflater.feed(b"[" * 6)
    with pytest.raises(Refused, match="unsupported Content-Encoding 'br'"):
        Inflater(limits, "br")
    small = Inflater(Limits(embedding_dim=DIM, max_inflated_bytes=1000), "gzip")
    with pytest.raises(Refused, match="batch inflates to more than 1000 bytes"):
        small.feed(gzip.compress(b" " * 1001))
