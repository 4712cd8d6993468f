"""The upload protocol's server side (docs/upload-protocol.md), once, for every store.

From an inflated body to the acknowledgement: parse the envelope, check each row, store the
good ones, acknowledge after the commit. The HTTP around it (token, sizes, deadline) is
`retrofit_agent.fleet.app`; storage is any `FleetStore`.

- Parsing is one pass of pydantic over the JSON, strict (a seq "7" is not the integer 7):
  each row is validated as an `UploadedObservation` and, only if that fails, kept as a plain
  object so it can be rejected alone with its first error (one bad row never holds back its
  batch). 8 us a 512-d row (measured, 500-row batch): validation does not bound the rate.
- Checks the type cannot make: the row's `device_id` is the token's device (a row for another
  device is rejected, never stored: otherwise one camera's forged rows would pre-empt another's
  real ones, which the first-copy-wins rule would then acknowledge as duplicates and lose),
  `seq` within 1..2^63-1 (the database's bigint; before, a larger seq got no answer and was
  re-sent forever), a known `schema_version`, an embedding of exactly the configured
  dimension, a `captured_utc` with a zone and not absurdly old or ahead (it picks a day
  partition).
- `(device_id, seq)` twice in one batch refuses the batch (400): the acknowledgement names
  seqs, so it could not say which copy it kept. The same seq from two devices is not that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import Field, ValidationError

from retrofit_agent.common.strict import StrictModel, first_error
from retrofit_agent.fleet.limits import KNOWN_SCHEMA_VERSIONS, MAX_SEQ, Limits, Refused
from retrofit_agent.fleet.store import FleetStore, StoredRow
from retrofit_agent.transport.protocol import PROTOCOL, Ack, Batch, RejectedRow, UploadedObservation

Row = Annotated[UploadedObservation | dict[str, Any], Field(union_mode="left_to_right")]


class ParsedBatch(StrictModel):
    """`protocol.Batch` with each row already validated where it is valid."""

    protocol: Literal[1]
    batch_id: str = Field(min_length=1, max_length=64)
    rows: list[Row] = Field(min_length=1)


def parse(data: bytes, limits: Limits) -> ParsedBatch:
    """The inflated body as a batch; Refused(400/413) if it is not one."""
    try:
        batch = ParsedBatch.model_validate_json(data, strict=True)
    except ValidationError:
        try:  # the envelope's rules are protocol.Batch's, and its messages the plainer ones
            Batch.model_validate_json(data)
        except ValidationError as exc:
            raise Refused(400, f"not a batch: {first_error(exc, 'body')}") from None
        raise Refused(400, "not a batch") from None  # what Batch takes, ParsedBatch takes
    if len(batch.rows) > limits.max_rows:
        raise Refused(413, f"rows: {len(batch.rows)} rows, this server takes {limits.max_rows}")
    return batch


def row_error(row: UploadedObservation, device_id: str, limits: Limits, now: datetime) -> str:
    """Why a well-formed row cannot be stored ("" if it can)."""
    if row.device_id != device_id:
        return f"device_id: {row.device_id!r} is not the device of this token"
    if not 1 <= row.seq <= MAX_SEQ:
        return f"seq: {row.seq} is not within 1..{MAX_SEQ}"
    if row.schema_version not in KNOWN_SCHEMA_VERSIONS:
        known = sorted(KNOWN_SCHEMA_VERSIONS)
        return f"schema_version: {row.schema_version} is unknown (known: {known})"
    if row.embedding is not None and len(row.embedding) != 2 * limits.embedding_dim:
        return (
            f"embedding: {len(row.embedding)} bytes, not {2 * limits.embedding_dim} "
            f"({limits.embedding_dim} float16)"
        )
    captured = row.captured_utc
    if captured.tzinfo is None:
        return "captured_utc: has no time zone"
    oldest = now - timedelta(days=limits.max_age_days)
    if not oldest <= captured <= now + timedelta(seconds=limits.max_future_s):
        days = limits.max_age_days
        return f"captured_utc: {captured.isoformat()} is over {days} days old or in the future"
    return ""


def acknowledge(
    store: FleetStore,
    device_id: str,
    batch: ParsedBatch,
    limits: Limits,
    now: datetime | None = None,
) -> Ack:
    """Check every row, store the good ones (committed when this returns), and say so."""
    now = now or datetime.now(UTC)
    valid: list[StoredRow] = []
    rejected: list[RejectedRow] = []
    seen: set[tuple[Any, int]] = set()
    for index, row in enumerate(batch.rows):
        if isinstance(row, UploadedObservation):
            key: tuple[Any, int] = (row.device_id, row.seq)
        else:
            seq = row.get("seq")
            if type(seq) is not int:
                raise Refused(400, f"rows.{index}: no integer seq")
            key = (row.get("device_id"), seq)
        if key in seen:
            raise Refused(400, f"rows.{index}: seq {key[1]} twice in one batch")
        seen.add(key)
        if not isinstance(row, UploadedObservation):
            rejected.append(RejectedRow(seq=key[1], error=_first_error(row)))
        elif error := row_error(row, device_id, limits, now):
            rejected.append(RejectedRow(seq=row.seq, error=error))
        else:
            header = row.model_dump_json(exclude={"embedding"})
            utc = row.captured_utc.astimezone(UTC)
            valid.append(StoredRow(row.device_id, row.seq, utc, header, row.embedding))
    new = store.store_rows(batch.batch_id, valid) if valid else 0
    return Ack(
        protocol=PROTOCOL,
        batch_id=batch.batch_id,
        accepted=[r.seq for r in valid],
        rejected=rejected,
        duplicates=len(valid) - new,
    )


def _first_error(row: dict[str, Any]) -> str:
    """The validation error of a row the batch parse kept as a plain object."""
    try:
        UploadedObservation.model_validate_json(pydantic_core.to_json(row), strict=True)
    except ValidationError as exc:
        return first_error(exc, "row")
    return "row: not an observation"  # the batch parse refused it; both are JSON-mode parses
