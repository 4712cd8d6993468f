"""A label event (contract 3, docs/contracts/observation.md): a label's presence over time, as
Frigate turns detections into events: a start, an end, a duration and the best frame.

Events are made by the keep policy (retrofit_agent.keep.events), stored in the queue's
`events` table, published on ZeroMQ when they start and end, and uploaded once closed.
`(device_id, seq)` is an event's idempotency key as it is an observation's: an event draws its
`seq` from the device's one sequence when it opens, so a number names one observation or one
event, never both, and is never reused.

While an event is open, `end_*` is the last frame on which the label was present so far; that
is what a crash leaves on disk, and what an interrupted event ends at when it is closed at the
next start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from retrofit_agent.common.strict import StrictModel

EVENT_SCHEMA_VERSION = 1
# absent: the label was gone for `keep.end_frames` frames; stopped: the agent stopped (SIGTERM,
# the end of a video, Ctrl-C); interrupted: closed at the next start after a crash.
EndReason = Literal["absent", "stopped", "interrupted"]


class Event(StrictModel):
    schema_version: int = EVENT_SCHEMA_VERSION
    device_id: str
    seq: int
    group: str
    label: str
    start_seq: int  # the first frame of the run of frames that opened the event
    start_utc: datetime
    end_seq: int  # the last frame with the label (so far, while open)
    end_utc: datetime
    duration_s: float  # from start to end, on the source's clock (a file's own timeline)
    frames: int  # frames that carried the label
    best_seq: int  # the frame with the label's highest score: a stored observation once closed
    best_score: float
    best_utc: datetime
    end_reason: EndReason | None = None  # None while open

    def json(self) -> bytes:
        return self.model_dump_json().encode()
