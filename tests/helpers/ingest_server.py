"""The fleet backend for the device's tests: the real app in a thread, and a faulty proxy.

`backend(store)` serves `retrofit_agent.fleet.app` with uvicorn on 127.0.0.1 in a thread (it
starts in milliseconds on a SQLite store), with the device `cam-1` holding `TOKEN`.
`FaultyServer` stands in front of it and answers each request with the next fault of its
script: "ok" and the faults that need a stored batch ("drop_ack", "store_and_hold", "slow")
are forwarded to the real backend, so the protocol under test is the backend's; the others
are played by the proxy. It records when requests came, which seqs were acknowledged, and
whether the client's queue ever showed a row as uploaded that no acknowledgement had named.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import shutil
import socket
import sqlite3
import ssl
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import helpers.needs_fleet  # noqa: F401 (skips the module without the [fleet] extra)
from retrofit_agent.fleet.app import OBSERVATIONS, create_app
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.store import FleetStore, ObservationQuery
from retrofit_agent.fleet.tokens import token_hash
from retrofit_agent.transport.protocol import Ack

TOKEN = "test-token-0123456789abcdef"
DEVICE = "cam-1"
DIM = 32  # helpers.observations' embeddings
HOLD_S = 10.0  # longest a handler is held by "hang" or "store_and_hold"
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

FAULTS = {
    "ok": "answers normally",
    "400": "bad request (the whole batch)",
    "500": "server error",
    "429": "too many requests, Retry-After: 1",
    "reset": "connection reset after half the request body",
    "hang": "reads the request, never answers",
    "drop_ack": "stores the batch, closes without answering",
    "store_and_hold": "stores the batch, signals `held`, answers nothing until released",
    "slow": "answers in 8 pieces 0.1 s apart",
    "garbage": "200 with a body that is not an acknowledgement",
}


def stored_keys(store: FleetStore) -> list[tuple[str, int]]:
    """Every stored (device_id, seq), in order."""
    rows = (json.loads(h) for _, h in store.observations(ObservationQuery(*EVER, limit=10**7)))
    return sorted((row["device_id"], row["seq"]) for row in rows)


class Backend:
    """The fleet app on `store`, served by uvicorn in this process."""

    def __init__(self, store: FleetStore, limits: Limits) -> None:
        from uvicorn import Config, Server  # after needs_fleet's check

        self.store = store
        config = Config(
            create_app(store, limits), host="127.0.0.1", log_config=None, access_log=False
        )
        self._server = Server(config)
        self._sock = config.bind_socket()
        port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{OBSERVATIONS}"
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],))

    def stored_keys(self) -> list[tuple[str, int]]:
        return stored_keys(self.store)

    def __enter__(self) -> Backend:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self._server.started, "the fleet app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(HOLD_S)
        self._sock.close()


def backend(
    store: FleetStore, limits: Limits | None = None, devices: dict[str, str] | None = None
) -> Backend:
    """The app on `store` with `devices` ({device_id: token}, default cam-1 with TOKEN)."""
    for device, token in (devices or {DEVICE: TOKEN}).items():
        store.add_device(device, token_hash(token))
    # helpers.observations' rows were captured on a fixed day: no age limit for them
    return Backend(store, limits or Limits(embedding_dim=DIM, max_age_days=36_500))


class FaultyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyServer

    def do_POST(self) -> None:
        fault = self.server.arrived()
        length = int(self.headers["Content-Length"])
        if fault == "reset":
            self.rfile.read(length // 2)
            linger = struct.pack("ii", 1, 0)  # close at once with RST, no FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if fault == "ok" and self.server.refuses(body):  # like a backend refusing whole batches
            fault = "400"
        if fault in ("400", "500", "429"):
            headers = {"Retry-After": "1"} if fault == "429" else {}
            self.answer(int(fault), b'{"error": "injected"}', headers)
        elif fault == "hang":
            self.server.release.wait(HOLD_S)
            self.close_connection = True
        elif fault == "garbage":
            self.answer(200, b"<html>captive portal</html>")
        else:
            status, headers, data = self.forward(body)
            if fault in ("drop_ack", "store_and_hold"):
                if fault == "store_and_hold":
                    self.server.held.set()
                    self.server.release.wait(HOLD_S)
                self.close_connection = True
                return
            if status == 200:  # recorded before the answer goes out, so the check is sound
                self.server.acked.update(Ack.model_validate_json(data).accepted)
            self.answer(status, data, headers, pieces=8 if fault == "slow" else 1)

    def forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The real backend's answer to this request."""
        conn = http.client.HTTPConnection(self.server.backend_host, timeout=HOLD_S)
        try:
            names = ("Content-Type", "Content-Encoding", "Authorization")
            headers = {n: self.headers[n] for n in names if self.headers[n] is not None}
            conn.request("POST", self.path, body, headers)
            response = conn.getresponse()
            kept = ("Retry-After", "WWW-Authenticate", "Content-Type")
            relayed = {n: response.getheader(n) for n in kept if response.getheader(n)}
            return response.status, relayed, response.read()
        finally:
            conn.close()

    def answer(
        self, status: int, data: bytes, headers: dict[str, str] | None = None, pieces: int = 1
    ) -> None:
        if status != 200:
            self.close_connection = True
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            if i:
                time.sleep(0.1)
            self.wfile.write(data[i : i + step])

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        backend: Backend,
        faults: Sequence[str] = (),
        client_db: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        refuse_seq: int | None = None,
        refuse_events: bool = False,
    ) -> None:
        super().__init__(("127.0.0.1", 0), FaultyHandler)
        assert set(faults) <= set(FAULTS), faults
        self.backend = backend
        self.backend_host = backend.url.split("/")[2]
        self.ssl_context = ssl_context
        self.faults = deque(faults)
        self.refuse_seq = refuse_seq  # every batch holding this seq is answered 400
        self.refuse_events = refuse_events  # as a server from before label events: 400
        self.client_db = client_db
        self.requests: list[tuple[float, str]] = []  # (time.monotonic(), fault)
        self.acked: set[int] = set()
        self.uploaded_without_ack: set[int] = set()
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}{OBSERVATIONS}"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:  # handshake in the handler thread, not the acceptor
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished or failed its TLS handshake is not a test failure."""

    def arrived(self) -> str:
        """Record a request, check the client's queue, and pop the fault to play, if any."""
        with self._lock:
            fault = self.faults.popleft() if self.faults else "ok"
            self.requests.append((time.monotonic(), fault))
            if self.client_db is not None:
                self.uploaded_without_ack |= client_uploaded(self.client_db) - self.acked
        return fault

    def refuses(self, body: bytes) -> bool:
        batch = json.loads(gzip.decompress(body))
        if self.refuse_events and "events" in batch:
            return True
        return any(row["seq"] == self.refuse_seq for row in batch["rows"])

    def gaps_after(self, fault: str) -> list[float]:
        """Seconds between each request that got `fault` and the next request."""
        times = self.requests
        return [times[i + 1][0] - t for i, (t, f) in enumerate(times[:-1]) if f == fault]


def client_uploaded(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return {r[0] for r in conn.execute("SELECT seq FROM observations WHERE state='uploaded'")}


@contextlib.contextmanager
def serving(server: FaultyServer) -> Iterator[FaultyServer]:
    """Serve in a thread; on exit release held handlers and stop."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(HOLD_S)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (cert, key), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
