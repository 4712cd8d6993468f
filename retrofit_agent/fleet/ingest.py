"""Reference ingest server: the receiving end of the upload protocol (docs/upload-protocol.md).

Small on purpose (stdlib http.server, one SQLite file): the tests upload to it, and it shows
what a fleet backend must do: check the token, validate the batch, store every row once by
`(device_id, seq)` (the first copy wins), commit, and only then acknowledge. A row that fails
validation is rejected alone, so one bad row never holds back the rest of its batch.

    python -m retrofit_agent.fleet.ingest --db ingest.db --port 8080 --token-file token
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import socket
import sqlite3
import ssl
import sys
import threading
import zlib
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retrofit_agent.common.sqlite import immediate
from retrofit_agent.common.strict import first_error
from retrofit_agent.transport.protocol import PROTOCOL, Ack, Batch, RejectedRow, UploadedObservation

PATH = "/v1/observations"
MAX_BODY_BYTES = 32 * 1024**2
MAX_JSON_BYTES = 128 * 1024**2  # decompressed: a gzip bomb stops here

log = logging.getLogger(__name__)


class BatchRefused(Exception):
    """The request as a whole is refused with an HTTP status; nothing of it was stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class IngestDatabase:
    """Received observations, unique by (device_id, seq); safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives power loss
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS observations (
                device_id TEXT NOT NULL, seq INTEGER NOT NULL, batch_id TEXT NOT NULL,
                received_utc TEXT NOT NULL, observation TEXT NOT NULL, embedding BLOB,
                PRIMARY KEY (device_id, seq))"""
        )

    def store(self, batch_id: str, rows: list[UploadedObservation]) -> int:
        """Insert the rows not yet held, in one transaction; returns how many were new."""
        now = datetime.now(UTC).isoformat()
        values = [
            (o.device_id, o.seq, batch_id, now, o.header_json().decode(), o.embedding) for o in rows
        ]
        with self._lock, immediate(self._conn):
            cursor = self._conn.executemany(
                "INSERT OR IGNORE INTO observations VALUES (?, ?, ?, ?, ?, ?)", values
            )
        return cursor.rowcount

    def stored_keys(self) -> list[tuple[str, int]]:
        """Every stored (device_id, seq), in order."""
        with self._lock:
            query = "SELECT device_id, seq FROM observations ORDER BY device_id, seq"
            return self._conn.execute(query).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def decode(body: bytes, content_encoding: str | None) -> Batch:
    """The request body (gzip or identity) as a batch envelope; BatchRefused if it is not one."""
    if content_encoding in (None, "identity"):
        data = body
    elif content_encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, MAX_JSON_BYTES)
        except zlib.error as exc:
            raise BatchRefused(400, f"body is not valid gzip: {exc}") from None
        if inflater.unconsumed_tail:
            raise BatchRefused(413, f"batch inflates to more than {MAX_JSON_BYTES} bytes")
        if not inflater.eof:
            raise BatchRefused(400, "gzip body is truncated")
    else:
        raise BatchRefused(415, f"unsupported Content-Encoding {content_encoding!r}")
    try:
        return Batch.model_validate_json(data)
    except ValidationError as exc:
        raise BatchRefused(400, f"not a batch: {first_error(exc, 'body')}") from None


def acknowledge(database: IngestDatabase, batch: Batch) -> Ack:
    """Validate each row, store the valid ones, and build the acknowledgement."""
    valid: list[UploadedObservation] = []
    rejected: list[RejectedRow] = []
    seen: set[int] = set()
    for index, row in enumerate(batch.rows):
        seq = row.get("seq")
        if type(seq) is not int:
            raise BatchRefused(400, f"rows.{index}: no integer seq")
        if seq in seen:
            raise BatchRefused(400, f"rows.{index}: seq {seq} twice in one batch")
        seen.add(seq)
        try:
            valid.append(UploadedObservation.model_validate_json(json.dumps(row)))
        except ValidationError as exc:
            rejected.append(RejectedRow(seq=seq, error=first_error(exc, "body")))
    new = database.store(batch.batch_id, valid) if valid else 0
    return Ack(
        protocol=PROTOCOL,
        batch_id=batch.batch_id,
        accepted=[o.seq for o in valid],
        rejected=rejected,
        duplicates=len(valid) - new,
    )


class IngestHandler(BaseHTTPRequestHandler):
    """POST PATH: check, read, decode, store, acknowledge. Anything else is an error status."""

    protocol_version = "HTTP/1.1"  # keep-alive: one TLS handshake for a whole drain
    timeout = 60  # seconds per socket operation: a stalled client does not hold a thread
    server: IngestServer

    def do_POST(self) -> None:
        try:
            self.check_headers()
            ack = self.ingest(decode(self.read_body(), self.encoding()))
        except BatchRefused as exc:
            self.reply(exc.status, json.dumps({"protocol": PROTOCOL, "error": exc.reason}).encode())
            return
        self.reply(200, ack.model_dump_json().encode())

    def check_headers(self) -> None:
        if self.path != PATH:
            raise BatchRefused(404, f"no such endpoint {self.path!r}, POST to {PATH}")
        expected = self.server.token
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if expected is not None and not hmac.compare_digest(given.encode(), expected.encode()):
            raise BatchRefused(401, "missing or wrong device token")
        if self.headers.get_content_type() != "application/json":
            raise BatchRefused(415, "Content-Type must be application/json")

    def ingest(self, batch: Batch) -> Ack:
        """Store the batch and say what became of each row (a backend's own logic goes here)."""
        return acknowledge(self.server.database, batch)

    def encoding(self) -> str | None:
        return self.headers.get("Content-Encoding")

    def read_body(self) -> bytes:
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            raise BatchRefused(411, "Content-Length required") from None
        if not 0 < length <= MAX_BODY_BYTES:
            raise BatchRefused(413, f"body must be 1 to {MAX_BODY_BYTES} bytes, not {length}")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError(f"client sent {len(body)} of {length} body bytes")
        return body

    def reply(self, status: int, data: bytes) -> None:
        if status != 200:
            self.close_connection = True  # an unread body must not be taken for a request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


class IngestServer(ThreadingHTTPServer):
    """The reference server: a thread per connection, TLS when given an SSL context."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        database: IngestDatabase,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        handler: type[IngestHandler] = IngestHandler,
    ) -> None:
        super().__init__(address, handler)
        self.database = database
        self.token = token
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}{PATH}"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:  # handshake in the handler thread, not the acceptor
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished or failed its TLS handshake is one log line, not a traceback."""
        log.warning("%s: %s", client_address[0], sys.exc_info()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrofit_agent.fleet.ingest", description="reference ingest server"
    )
    parser.add_argument("--db", type=Path, required=True, help="SQLite file for received rows")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--token-file", type=Path, help="accept only this bearer token")
    parser.add_argument("--cert", type=Path, help="TLS certificate chain (PEM); needs --key")
    parser.add_argument("--key", type=Path, help="TLS private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    logging.basicConfig(level=logging.INFO, format="ingest: %(message)s")
    token = args.token_file.read_text().strip() if args.token_file else None
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    server = IngestServer((args.host, args.port), IngestDatabase(args.db), token, context)
    print(f"listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
