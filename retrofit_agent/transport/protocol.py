"""The upload wire format (docs/upload-protocol.md), shared by the uploader and the ingest server.

A request body is a gzip-compressed `Batch`; a 200 answer is an `Ack`. Both sides parse with
these models, so the documentation, the client and the reference server cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt

from retrofit_agent.common.strict import StrictModel
from retrofit_agent.observation import Observation

PROTOCOL = 1
MAX_ROWS = 10_000


class UploadedObservation(Observation):
    """A row as uploaded: contract 3 with an optional embedding (base64, so validate JSON)."""

    embedding: bytes | None = None


class Batch(StrictModel):
    """The request envelope. Rows are checked one by one (UploadedObservation) by the server."""

    protocol: Literal[1]
    batch_id: str = Field(min_length=1, max_length=64)
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS)


class RejectedRow(BaseModel):
    """A row the server would not store, and why. The answer's models are not StrictModel:
    unknown fields are ignored, so an older agent keeps working against a newer server."""

    seq: StrictInt
    error: str


class Ack(BaseModel):
    """The answer to a stored batch; unknown fields are ignored so servers can add some."""

    protocol: Literal[1]
    batch_id: str
    accepted: list[StrictInt]
    rejected: list[RejectedRow] = []
    duplicates: StrictInt = 0
