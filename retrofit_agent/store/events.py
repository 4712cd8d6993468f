"""The label events in the queue's database: written with the observations, uploaded once closed.

- Events are buffered like rows and written in the same transaction as the batch of
  observations (Store.flush), so an event and the rows around it are durable together. Each
  flush also rewrites the open events as they stand (`open_events`, the keep policy's), so
  after a crash the database holds every open event up to its last flush: at most about a
  heartbeat (`keep.heartbeat_s`) plus `store.commit_interval_s` behind.
- `state` is `open` while the event lasts (not uploadable, still rewritten), then `pending`,
  then, like an observation, `uploaded` or `quarantined` by the uploader; a closed event is
  never rewritten.
- `recover` closes the events a crash left open, as `interrupted`, ending at their last
  recorded frame. Only the writer calls it, at start (frames.runtime): the uploader's
  connection in the running service, or a `queue` command, must not close live events.
- Bounded by `store.max_events`: beyond it the oldest uploaded events are evicted first, then
  the oldest closed ones (never an open one). Events are tens of bytes of JSON a minute, so
  100,000 is months offline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from retrofit_agent.common.sqlite import immediate
from retrofit_agent.errors import StoreError
from retrofit_agent.event import Event
from retrofit_agent.store.database import OPEN, PENDING, QUARANTINED, UPLOADED

UPSERT = (
    "INSERT INTO events (seq, device_id, start_utc, state, event) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (seq) DO UPDATE SET state = excluded.state, event = excluded.event "
    f"WHERE events.state = '{OPEN}'"
)


def _values(event: Event) -> tuple[Any, ...]:
    state = OPEN if event.end_reason is None else PENDING
    return (event.seq, event.device_id, event.start_utc.isoformat(), state, event.json().decode())


class EventLog:
    """The `events` table on the queue's connection `db` (to the file at `path`)."""

    def __init__(self, db: sqlite3.Connection, path: Path, max_events: int) -> None:
        self.db = db
        self.path = path
        self.max_events = max_events
        self.open_events: Callable[[], list[Event]] = list  # set by the writer (the runtime)
        self._dirty: dict[int, Event] = {}  # by seq: the latest state of each changed event
        self.evicted = 0

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def put(self, event: Event) -> None:
        """Buffer an event's new state (opened or ended); written with the next batch."""
        self._dirty[event.seq] = event

    def write(self) -> None:
        """Inside the queue's transaction: the buffered events and the open ones as they
        stand, then the bound."""
        current = {e.seq: e for e in self.open_events()} | self._dirty
        self.db.executemany(UPSERT, [_values(e) for e in current.values()])
        if self._dirty:  # only events that started or ended can add a row: count then
            over = self.db.execute("SELECT count(*) FROM events").fetchone()[0] - self.max_events
            if over > 0:
                self._evict(over)

    def written(self) -> None:
        """The transaction of `write` committed."""
        self._dirty.clear()

    def _evict(self, count: int) -> None:
        seqs = [
            seq
            for (seq,) in self.db.execute(
                f"SELECT seq FROM events WHERE state != '{OPEN}' "
                f"ORDER BY state != '{UPLOADED}', seq LIMIT ?",
                [count],
            )
        ]
        self.db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
        self.evicted += len(seqs)

    def recover(self) -> list[Event]:
        """Close the events a crash left open, as interrupted; the events closed."""
        rows = self.db.execute(f"SELECT event FROM events WHERE state = '{OPEN}'").fetchall()
        closed = [
            Event.model_validate_json(event).model_copy(update={"end_reason": "interrupted"})
            for (event,) in rows
        ]
        if closed:
            try:
                with immediate(self.db):
                    self.db.executemany(UPSERT, [_values(e) for e in closed])
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: cannot close interrupted events: {exc}") from None
        return closed

    def pending(self, limit: int, newest_first: bool = False) -> list[tuple[int, str]]:
        """Up to `limit` closed events not yet uploaded (seq, JSON), in upload order."""
        if limit <= 0:
            return []
        order = "DESC" if newest_first else "ASC"
        return self.db.execute(
            f"SELECT seq, event FROM events WHERE state = ? ORDER BY seq {order} LIMIT ?",
            [PENDING, limit],
        ).fetchall()

    def set_state(self, seqs: Iterable[int], state: str) -> None:
        """Move pending events to `state` in one transaction (evicted ones are skipped)."""
        try:
            with immediate(self.db):
                self.db.executemany(
                    "UPDATE events SET state = ? WHERE seq = ? AND state = ?",
                    [(state, seq, PENDING) for seq in seqs],
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot update event upload state: {exc}") from None

    def events(self) -> list[Event]:
        """Every stored event, in seq order (tests, `queue` commands)."""
        rows = self.db.execute("SELECT event FROM events ORDER BY seq")
        return [Event.model_validate_json(event) for (event,) in rows]

    def stats(self) -> dict[str, Any]:
        by_state = dict(self.db.execute("SELECT state, count(*) FROM events GROUP BY state"))
        ended = dict(
            self.db.execute(
                "SELECT json_extract(event, '$.end_reason'), count(*) FROM events "
                f"WHERE state != '{OPEN}' GROUP BY 1"
            )
        )
        return {
            "events": sum(by_state.values()),
            "open": by_state.get(OPEN, 0),
            "pending": by_state.get(PENDING, 0),
            "uploaded": by_state.get(UPLOADED, 0),
            "quarantined": by_state.get(QUARANTINED, 0),
            "ended": ended,
        }
