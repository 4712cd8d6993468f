"""One HTTP(S) connection to the ingest endpoint, kept open while the uploader drains.

A TLS handshake over cellular costs more bytes and round trips than a small batch, so the
connection is reused; after any error it is dropped and the next request opens a new one. The
stdlib client is enough: one POST, a bounded answer, a timeout on every socket operation.
"""

from __future__ import annotations

import http.client
import logging
import ssl
from email.message import Message
from urllib.parse import urlsplit

from retrofit_agent.config import UploadConfig
from retrofit_agent.errors import ConfigError

MAX_ANSWER_BYTES = 4 * 1024**2

log = logging.getLogger(__name__)


def ssl_context(config: UploadConfig) -> ssl.SSLContext:
    """System CAs, or only `ca_file`; no verification only when tls_verify is false."""
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upload.ca_file {config.ca_file}: cannot load: {exc}") from None
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("upload.tls_verify is false: the server's certificate is not checked")
    return context


class Link:
    """One HTTP(S) connection to the endpoint, reused between requests, dropped on any error."""

    def __init__(self, url: str, timeout_s: float, context: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.https = parts.scheme == "https"
        self.timeout_s = timeout_s
        self.context = context
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, Message, bytes]:
        """Status, headers and body of the answer; OSError or HTTPException if there is none."""
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=self.context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, self.timeout_s)
        try:
            self._conn.request("POST", self.path, body, headers)
            response = self._conn.getresponse()
            data = response.read(MAX_ANSWER_BYTES + 1)
            if len(data) > MAX_ANSWER_BYTES:
                raise http.client.HTTPException(f"answer longer than {MAX_ANSWER_BYTES} bytes")
            if response.length:  # the server closed before the end of its answer
                raise http.client.IncompleteRead(data, response.length)
        except BaseException:
            self.close()
            raise
        return response.status, response.headers, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def describe(exc: BaseException, timeout_s: float) -> str:
    """One line for a failed request (socket timeouts have an empty message)."""
    if isinstance(exc, TimeoutError):
        return f"no progress within {timeout_s:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
