"""The reference ingest server on 127.0.0.1 in a thread, optionally misbehaving on purpose.

`FaultyServer` answers each request with the next fault of its script (then normally), and
records when requests came, which seqs it acknowledged, and whether the client's queue ever
showed a row as uploaded that no acknowledgement had named.
"""

from __future__ import annotations

import contextlib
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
from pathlib import Path

import pytest

from retrofit_agent.fleet.ingest import (
    BatchRefused,
    IngestDatabase,
    IngestHandler,
    IngestServer,
    acknowledge,
    decode,
)
from retrofit_agent.transport.protocol import Ack, Batch

TOKEN = "test-token-0123456789abcdef"
HOLD_S = 10.0  # longest a handler is held by "hang" or "store_and_hold"

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


class FaultyHandler(IngestHandler):
    server: FaultyServer

    def do_POST(self) -> None:
        fault = self.server.arrived()
        if fault == "ok":
            super().do_POST()
            return
        length = int(self.headers["Content-Length"])
        if fault == "reset":
            self.rfile.read(length // 2)
            linger = struct.pack("ii", 1, 0)  # close at once with RST, no FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()
            self.close_connection = True
            return
        body = self.rfile.read(length)
        if fault in ("400", "500", "429"):
            headers = {"Retry-After": "1"} if fault == "429" else {}
            self.answer(int(fault), b'{"error": "injected"}', headers)
        elif fault == "hang":
            self.server.release.wait(HOLD_S)
            self.close_connection = True
        elif fault in ("drop_ack", "store_and_hold"):
            acknowledge(self.server.database, decode(body, self.encoding()))
            if fault == "store_and_hold":
                self.server.held.set()
                self.server.release.wait(HOLD_S)
            self.close_connection = True
        elif fault == "slow":
            ack = acknowledge(self.server.database, decode(body, self.encoding()))
            self.server.acked.update(ack.accepted)
            self.answer(200, ack.model_dump_json().encode(), pieces=8)
        elif fault == "garbage":
            self.answer(200, b"<html>captive portal</html>")

    def ingest(self, batch: Batch) -> Ack:
        refused = self.server.refuse_seq
        if any(row["seq"] == refused for row in batch.rows):  # like backends refusing batches
            raise BatchRefused(400, f"row {refused} is bad")
        return super().ingest(batch)

    def answer(
        self, status: int, data: bytes, headers: dict[str, str] | None = None, pieces: int = 1
    ) -> None:
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        step = -(-len(data) // pieces)
        for i in range(0, len(data), step):
            if i:
                time.sleep(0.1)
            self.wfile.write(data[i : i + step])

    def reply(self, status: int, data: bytes) -> None:
        if status == 200:  # recorded before the answer goes out, so the check below is sound
            self.server.acked.update(Ack.model_validate_json(data).accepted)
        super().reply(status, data)


class FaultyServer(IngestServer):
    def __init__(
        self,
        database: IngestDatabase,
        faults: Sequence[str] = (),
        client_db: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        refuse_seq: int | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), database, TOKEN, ssl_context, FaultyHandler)
        assert set(faults) <= set(FAULTS), faults
        self.faults = deque(faults)
        self.refuse_seq = refuse_seq  # every batch holding this seq is answered 400
        self.client_db = client_db
        self.requests: list[tuple[float, str]] = []  # (time.monotonic(), fault)
        self.acked: set[int] = set()
        self.uploaded_without_ack: set[int] = set()
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def arrived(self) -> str:
        """Record a request, check the client's queue, and pop the fault to play, if any."""
        with self._lock:
            fault = self.faults.popleft() if self.faults else "ok"
            self.requests.append((time.monotonic(), fault))
            if self.client_db is not None:
                self.uploaded_without_ack |= client_uploaded(self.client_db) - self.acked
        return fault

    def gaps_after(self, fault: str) -> list[float]:
        """Seconds between each request that got `fault` and the next request."""
        times = self.requests
        return [times[i + 1][0] - t for i, (t, f) in enumerate(times[:-1]) if f == fault]


def client_uploaded(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return {r[0] for r in conn.execute("SELECT seq FROM observations WHERE state='uploaded'")}


@contextlib.contextmanager
def serving(server: IngestServer) -> Iterator[IngestServer]:
    """Serve in a thread; on exit release held handlers and stop (the database stays open)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if isinstance(server, FaultyServer):
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
