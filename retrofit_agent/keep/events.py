"""Label events with Frigate's semantics: a label's presence over time, with hysteresis.

A label opens an event once it has been present on `min_frames` consecutive frames; the event
starts at the first of them. It ends once the label has been absent for `end_frames`
consecutive frames, at the last frame that carried it, so short dropouts inside a scene do not
cut it in two. Its best frame is the one with the label's highest score. A best frame that the
policy did not keep for another reason is held (one observation per open event, so memory is
bounded by the label bank) and handed back when the event ends, to be stored with the reason
`best`: every closed event names a stored observation.

An event takes its `seq` from the device's sequence when it opens (`new_seq`; None when no
number can be reserved, a full disk: the event then opens on a later frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from retrofit_agent.event import EndReason, Event
from retrofit_agent.observation import Observation


@dataclass
class Sighting:
    """A frame that carried the label: where it was, when, and the label's score there."""

    seq: int
    utc: datetime
    t: float
    score: float


@dataclass
class Track:
    """One label's state: the run of frames it is present on, and its open event if any."""

    device_id: str
    first: Sighting  # the first frame of the current run (or of the open event)
    last: Sighting
    best: Sighting
    best_held: Observation | None  # the best frame's observation, if it was not kept
    frames: int = 1
    run: int = 1  # present frames in a row
    absent: int = 0  # absent frames in a row
    seq: int | None = None  # the event's number once it is open

    def event(self, group: str, label: str, end_reason: EndReason | None = None) -> Event:
        assert self.seq is not None
        return Event(
            device_id=self.device_id,
            seq=self.seq,
            group=group,
            label=label,
            start_seq=self.first.seq,
            start_utc=self.first.utc,
            end_seq=self.last.seq,
            end_utc=self.last.utc,
            duration_s=max(0.0, self.last.t - self.first.t),
            frames=self.frames,
            best_seq=self.best.seq,
            best_score=self.best.score,
            best_utc=self.best.utc,
            end_reason=end_reason,
        )


class Changes(NamedTuple):
    """What one frame did to the events: opened, closed, and best frames now to be stored."""

    started: list[Event]
    ended: list[Event]
    best_frames: list[Observation]


NO_CHANGES = Changes([], [], [])


class EventTracker:
    def __init__(self, min_frames: int, end_frames: int, new_seq: Callable[[], int | None]):
        self.min_frames = min_frames
        self.end_frames = end_frames
        self._new_seq = new_seq
        self._tracks: dict[tuple[str, str], Track] = {}

    def update(self, observation: Observation, t: float, kept: bool) -> Changes:
        """One frame (`kept`: the policy stores it anyway) at time `t` on the source's clock."""
        started: list[Event] = []
        ended: list[Event] = []
        best_frames: list[Observation] = []
        present = {(s.group, s.label): s.score for s in observation.labels}
        utc = observation.captured_utc
        for key, score in present.items():
            seen = Sighting(observation.seq, utc, t, score)
            track = self._tracks.get(key)
            if track is None:  # a new run
                held = None if kept else observation
                self._tracks[key] = track = Track(observation.device_id, seen, seen, seen, held)
            else:
                track.last, track.frames, track.absent = seen, track.frames + 1, 0
                track.run += 1
                if score > track.best.score:
                    track.best, track.best_held = seen, None if kept else observation
            if track.seq is None and track.run >= self.min_frames:
                track.seq = self._new_seq()
                if track.seq is not None:
                    started.append(track.event(*key))
        for key in [k for k in self._tracks if k not in present]:
            track = self._tracks[key]
            track.absent += 1
            track.run = 0
            if track.seq is None:
                del self._tracks[key]  # a run too short to open an event
            elif track.absent >= self.end_frames:
                ended.append(self._close(key, "absent", best_frames))
        return Changes(started, ended, best_frames) if started or ended else NO_CHANGES

    def close_all(self, reason: EndReason) -> Changes:
        """End every open event (the agent stops); forget runs that opened none."""
        ended: list[Event] = []
        best_frames: list[Observation] = []
        for key in list(self._tracks):
            if self._tracks[key].seq is None:
                del self._tracks[key]
            else:
                ended.append(self._close(key, reason, best_frames))
        return Changes([], ended, best_frames)

    @property
    def open_count(self) -> int:
        return sum(t.seq is not None for t in self._tracks.values())

    def open_events(self) -> list[Event]:
        """The open events as they stand (what a crash would leave behind)."""
        return [t.event(*key) for key, t in self._tracks.items() if t.seq is not None]

    def _close(
        self, key: tuple[str, str], reason: EndReason, best_frames: list[Observation]
    ) -> Event:
        track = self._tracks.pop(key)
        held = track.best_held
        if held is not None:  # stored now: other events with the same best frame hold it no more
            best_frames.append(held)
            for other in self._tracks.values():
                if other.best_held is not None and other.best_held.seq == held.seq:
                    other.best_held = None
        return track.event(*key, end_reason=reason)
