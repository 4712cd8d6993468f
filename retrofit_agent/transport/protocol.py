"""The upload wire format (docs/upload-protocol.md), shared by the uploader and the ingest server.

A request body is a gzip-compressed `Batch`; a 200 answer is an `Ack`. Both sides parse with
these models, so the documentation, the client and the server cannot drift apart.

A batch carries observations (`rows`) and closed label events (`events`), each idempotent by
`(device_id, seq)`: an event's seq comes from the same device sequence as the rows', so the
two never share a number. `events` was added to version 1 as an optional key: a server that
predates it refuses such a batch (400, unknown key), and the device's halving then isolates
and quarantines the events while its rows still go through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from retrofit_agent.common.strict import StrictModel
from retrofit_agent.observation import Observation

PROTOCOL = 1
MAX_ROWS = 10_000  # rows and events together


class UploadedObservation(Observation):
    """A row as uploaded: contract 3 with an optional embedding (base64, so validate JSON)."""

    embedding: bytes | None = None


class Batch(StrictModel):
    """The request envelope. Rows and events are checked one by one by the server."""

    protocol: Literal[1]
    batch_id: str = Field(min_length=1, max_length=64)
    rows: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ROWS)
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ROWS)

    @model_validator(mode="after")
    def _one_to_max_items(self) -> Batch:
        if not 1 <= len(self.rows) + len(self.events) <= MAX_ROWS:
            raise ValueError(f"a batch holds 1 to {MAX_ROWS} rows and events together")
        return self


class RejectedRow(BaseModel):
    """A row (or event) the server would not store, and why. The answer's models are not
    StrictModel: unknown fields are ignored, so an older agent keeps working against a newer
    server."""

    seq: StrictInt
    error: str


class Ack(BaseModel):
    """The answer to a stored batch; unknown fields are ignored so servers can add some."""

    protocol: Literal[1]
    batch_id: str
    accepted: list[StrictInt]
    rejected: list[RejectedRow] = []
    duplicates: StrictInt = 0
    events_accepted: list[StrictInt] = []
    events_rejected: list[RejectedRow] = []
    event_duplicates: StrictInt = 0
