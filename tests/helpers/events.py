"""Label events made by hand, for the store, upload and fleet tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retrofit_agent.event import EndReason, Event

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # the day helpers.observations' rows were taken


def event(
    seq: int,
    end_reason: EndReason | None = "absent",
    frames: int = 9,
    group: str = "weather",
    label: str = "rain",
    device_id: str = "cam-1",
    start: datetime = T0,
) -> Event:
    """An event numbered `seq` that starts on frame seq + 1 and carries the label `frames`
    frames, one a second."""
    return Event(
        device_id=device_id,
        seq=seq,
        group=group,
        label=label,
        start_seq=seq + 1,
        start_utc=start,
        end_seq=seq + frames,
        end_utc=start + timedelta(seconds=frames - 1),
        duration_s=float(frames - 1),
        frames=frames,
        best_seq=seq + 2,
        best_score=0.8,
        best_utc=start + timedelta(seconds=1),
        end_reason=end_reason,
    )
