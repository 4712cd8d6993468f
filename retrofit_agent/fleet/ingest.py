"""The upload protocol's server side (docs/upload-protocol.md), once, for every store.

From an inflated body to the acknowledgement: parse the envelope, check each row and label
event, store the good ones, acknowledge after the commit. The HTTP around it (token, sizes,
deadline) is `retrofit_agent.fleet.app`; storage is any `FleetStore`. Events are checked and
acknowledged exactly as rows are, under their own seqs (`events_accepted`, `events_rejected`),
and only closed events are taken: a device uploads an event once it has ended.

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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import pydantic_core
from pydantic import BaseModel, Field, ValidationError, model_validator

from retrofit_agent.common.strict import StrictModel, first_error
from retrofit_agent.event import Event
from retrofit_agent.fleet.limits import (
    KNOWN_EVENT_SCHEMA_VERSIONS,
    KNOWN_SCHEMA_VERSIONS,
    MAX_SEQ,
    Limits,
    Refused,
)
from retrofit_agent.fleet.store import FleetStore, StoredEvent, StoredRow
from retrofit_agent.transport.protocol import PROTOCOL, Ack, Batch, RejectedRow, UploadedObservation

Row = Annotated[UploadedObservation | dict[str, Any], Field(union_mode="left_to_right")]
EventItem = Annotated[Event | dict[str, Any], Field(union_mode="left_to_right")]
Item = TypeVar("Item", UploadedObservation, Event)


class ParsedBatch(StrictModel):
    """`protocol.Batch` with each row and event already validated where it is valid."""

    protocol: Literal[1]
    batch_id: str = Field(min_length=1, max_length=64)
    rows: list[Row] = Field(default_factory=list)
    events: list[EventItem] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> ParsedBatch:
        if not self.rows and not self.events:
            raise ValueError("a batch holds at least one row or event")
        return self


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
    if (count := len(batch.rows) + len(batch.events)) > limits.max_rows:
        what = "rows and events" if batch.events else "rows"
        raise Refused(413, f"rows: {count} {what}, this server takes {limits.max_rows}")
    return batch


def key_error(item: UploadedObservation | Event, device_id: str) -> str:
    """What is wrong with the `(device_id, seq)` of a row or an event ("" if nothing)."""
    if item.device_id != device_id:
        return f"device_id: {item.device_id!r} is not the device of this token"
    if not 1 <= item.seq <= MAX_SEQ:
        return f"seq: {item.seq} is not within 1..{MAX_SEQ}"
    return ""


def time_error(field: str, moment: datetime, limits: Limits, now: datetime) -> str:
    """A time that picks a day partition: with a zone, not absurdly old nor ahead."""
    if moment.tzinfo is None:
        return f"{field}: has no time zone"
    oldest = now - timedelta(days=limits.max_age_days)
    if not oldest <= moment <= now + timedelta(seconds=limits.max_future_s):
        days = limits.max_age_days
        return f"{field}: {moment.isoformat()} is over {days} days old or in the future"
    return ""


def row_error(row: UploadedObservation, device_id: str, limits: Limits, now: datetime) -> str:
    """Why a well-formed row cannot be stored ("" if it can)."""
    if error := key_error(row, device_id):
        return error
    if row.schema_version not in KNOWN_SCHEMA_VERSIONS:
        known = sorted(KNOWN_SCHEMA_VERSIONS)
        return f"schema_version: {row.schema_version} is unknown (known: {known})"
    if row.embedding is not None and len(row.embedding) != 2 * limits.embedding_dim:
        return (
            f"embedding: {len(row.embedding)} bytes, not {2 * limits.embedding_dim} "
            f"({limits.embedding_dim} float16)"
        )
    return time_error("captured_utc", row.captured_utc, limits, now)


def event_error(event: Event, device_id: str, limits: Limits, now: datetime) -> str:
    """Why a well-formed event cannot be stored ("" if it can)."""
    if error := key_error(event, device_id):
        return error
    if event.schema_version not in KNOWN_EVENT_SCHEMA_VERSIONS:
        known = sorted(KNOWN_EVENT_SCHEMA_VERSIONS)
        return f"schema_version: {event.schema_version} is unknown (known: {known})"
    if event.end_reason is None:
        return "end_reason: null, an open event (only closed events are uploaded)"
    return time_error("start_utc", event.start_utc, limits, now)


def acknowledge(
    store: FleetStore,
    device_id: str,
    batch: ParsedBatch,
    limits: Limits,
    now: datetime | None = None,
) -> Ack:
    """Check every row and event, store the good ones (committed when this returns), and say
    so."""
    now = now or datetime.now(UTC)
    rows, rejected = _sort(
        "rows", batch.rows, UploadedObservation, row_error, device_id, limits, now
    )
    events, events_rejected = _sort(
        "events", batch.events, Event, event_error, device_id, limits, now
    )
    stored = [
        StoredRow(
            r.device_id,
            r.seq,
            r.captured_utc.astimezone(UTC),
            r.model_dump_json(exclude={"embedding"}),
            r.embedding,
        )
        for r in rows
    ]
    new = store.store_rows(batch.batch_id, stored) if stored else 0
    stored_events = [
        StoredEvent(e.device_id, e.seq, e.start_utc.astimezone(UTC), e.model_dump_json())
        for e in events
    ]
    new_events = store.store_events(batch.batch_id, stored_events) if stored_events else 0
    return Ack(
        protocol=PROTOCOL,
        batch_id=batch.batch_id,
        accepted=[r.seq for r in rows],
        rejected=rejected,
        duplicates=len(rows) - new,
        events_accepted=[e.seq for e in events],
        events_rejected=events_rejected,
        event_duplicates=len(events) - new_events,
    )


def _sort(
    where: str,
    items: Sequence[Item | dict[str, Any]],
    model: type[Item],
    error: Callable[[Item, str, Limits, datetime], str],
    device_id: str,
    limits: Limits,
    now: datetime,
) -> tuple[list[Item], list[RejectedRow]]:
    """The valid items of `where` (rows or events) and the rejected ones, each with its first
    problem; Refused(400) for an item without an integer seq or a key twice in the batch."""
    valid: list[Item] = []
    rejected: list[RejectedRow] = []
    seen: set[tuple[Any, int]] = set()
    for index, item in enumerate(items):
        if isinstance(item, model):
            key: tuple[Any, int] = (item.device_id, item.seq)
        else:
            assert isinstance(item, dict)
            seq = item.get("seq")
            if type(seq) is not int:
                raise Refused(400, f"{where}.{index}: no integer seq")
            key = (item.get("device_id"), seq)
        if key in seen:
            raise Refused(400, f"{where}.{index}: seq {key[1]} twice in one batch")
        seen.add(key)
        if not isinstance(item, model):
            rejected.append(RejectedRow(seq=key[1], error=_first_error(item, model)))
        elif problem := error(item, device_id, limits, now):
            rejected.append(RejectedRow(seq=item.seq, error=problem))
        else:
            valid.append(item)
    return valid, rejected


def _first_error(item: dict[str, Any], model: type[BaseModel]) -> str:
    """The validation error of an item the batch parse kept as a plain object."""
    what = "row" if model is UploadedObservation else "event"
    try:
        model.model_validate_json(pydantic_core.to_json(item), strict=True)
    except ValidationError as exc:
        return first_error(exc, what)
    return f"{what}: not valid"  # the batch parse refused it; both are JSON-mode parses
