"""What a request may cost the server, checked at the edge before anything is materialised.

Measured against the reference server (issue 19): one 127 KiB gzip of a row holding a
66-million-element list inflated to 132 MB and parsed into 9 GB of Python objects. JSON costs
up to ~25x its size once parsed (`[],` is 3 bytes and a 56-byte list), so the inflated size
alone does not bound memory: the number of JSON values does. `Inflater` therefore inflates
the body as it arrives, in bounded steps, and counts the characters that open a value or
separate two (`[`, `{`, `,`) as it goes; past `max_inflated_bytes` or `max_json_values` the
request is refused (413) before a single Python object is made. A realistic row (contract 3,
a dozen labels) holds about 80 such values and 1.4 KiB of base64 for a 512-d embedding, so
the defaults admit ~3,000-row batches; the device answers 413 by halving its batch, so a
smaller limit costs a device more requests, never rows.
"""

from __future__ import annotations

import zlib

from pydantic import Field, PositiveFloat, PositiveInt

from retrofit_agent.common.strict import StrictModel
from retrofit_agent.transport.protocol import MAX_ROWS

MAX_SEQ = 2**63 - 1  # PostgreSQL bigint, SQLite INTEGER
KNOWN_SCHEMA_VERSIONS = frozenset({1, 2})  # retrofit_agent.observation.SCHEMA_VERSION
KNOWN_EVENT_SCHEMA_VERSIONS = frozenset({1})  # retrofit_agent.event.EVENT_SCHEMA_VERSION
INFLATE_STEP = 1 << 20  # bytes inflated per call: memory grows by at most this past a cap
VALUE_MARKS = (b"[", b"{", b",")


class Refused(Exception):
    """The request as a whole is refused with the protocol's status; nothing was stored."""

    def __init__(self, status: int, reason: str, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class Limits(StrictModel):
    """Per-request bounds of one ingest worker (`retrofit-fleet serve` options)."""

    embedding_dim: PositiveInt = Field(description="float16 values per embedding")
    max_body_bytes: PositiveInt = 8 * 1024**2  # compressed, as sent
    max_inflated_bytes: PositiveInt = 16 * 1024**2
    max_json_values: PositiveInt = 300_000
    max_rows: int = Field(MAX_ROWS, ge=1, le=MAX_ROWS)
    max_age_days: PositiveInt = 400  # a row captured longer ago is rejected (partitions)
    max_future_s: PositiveFloat = 86_400.0  # clock skew allowed ahead of the server's
    deadline_s: PositiveFloat = 30.0  # to receive the whole body; a slow one is cut off
    max_inflight: PositiveInt = 8  # requests decoded and stored at once, per worker


class Inflater:
    """Collects a request body (gzip or identity) chunk by chunk, within `limits`."""

    def __init__(self, limits: Limits, content_encoding: str | None) -> None:
        if content_encoding not in (None, "identity", "gzip"):
            raise Refused(415, f"unsupported Content-Encoding {content_encoding!r}")
        self._limits = limits
        self._gzip = content_encoding == "gzip"
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._data = bytearray()
        self._values = 0
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self._limits.max_body_bytes:
            raise Refused(413, f"body larger than {self._limits.max_body_bytes} bytes")
        if not self._gzip:
            self._append(chunk)
            return
        try:
            while chunk:
                self._append(self._inflater.decompress(chunk, INFLATE_STEP))
                chunk = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise Refused(400, f"body is not valid gzip: {exc}") from None

    def _append(self, data: bytes) -> None:
        if len(self._data) + len(data) > self._limits.max_inflated_bytes:
            limit = self._limits.max_inflated_bytes
            raise Refused(413, f"batch inflates to more than {limit} bytes")
        self._values += sum(data.count(mark) for mark in VALUE_MARKS)
        if self._values > self._limits.max_json_values:
            raise Refused(413, f"batch holds more than {self._limits.max_json_values} JSON values")
        self._data += data

    def result(self) -> bytes:
        """The whole inflated body; Refused if the gzip stream did not end."""
        if self._gzip and not self._inflater.eof:
            raise Refused(400, "gzip body is truncated")
        if self._inflater.unused_data:
            raise Refused(400, "data after the end of the gzip stream")
        return bytes(self._data)
