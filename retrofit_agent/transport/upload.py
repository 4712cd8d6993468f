"""Drain the observation queue to the ingest endpoint: at least once, idempotent, frugal.

The wire protocol is docs/upload-protocol.md; retrofit-fleet serve (retrofit_agent.fleet)
receives it.

- A row leaves `pending` only when an acknowledgement naming it arrives. A crash, a timeout or
  a lost answer re-sends at most the batch in flight; the server deduplicates by
  `(device_id, seq)`, so a re-send is harmless. Closed label events travel the same way, in
  the same batches, first (they are few and small): everything said of rows here holds for
  them, under their own seqs.
- Every failed attempt waits a full-jitter exponential backoff (common.backoff), uniform in
  [0, min(cap, base * 2**(failures - 1))], or longer if the server sent Retry-After: a dead link
  costs a bounded number of requests per hour, and a fleet does not retry in lockstep.
- A batch refused for its content (400, 413, 422) is halved at once until the culprit stands
  alone (at most log2(batch_rows) requests), and that row is quarantined, then the backoff
  applies: a backend that wrongly refuses everything gets one quarantined row per backoff, not
  a whole fleet's queues. Rows the server rejects in its acknowledgement are quarantined at
  once. Other 4xx and certificate failures mean the device is misconfigured: nothing is
  quarantined.
- Request bodies count against a daily byte budget (store.budget: per UTC day, in the queue's
  database so restarts cannot reset it) and are paced to a maximum rate; batches start only
  inside upload windows.

`Uploader.run_once` is one step for a service loop; `Uploader.drain` is the loop itself.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import random
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retrofit_agent import __version__
from retrofit_agent.common.backoff import Backoff
from retrofit_agent.common.logs import kv
from retrofit_agent.common.strict import first_error
from retrofit_agent.config import UploadConfig, Window
from retrofit_agent.errors import ConfigError, UploadError, UploadRefused
from retrofit_agent.store.budget import UploadBudget
from retrofit_agent.store.queue import QUARANTINED, UPLOADED, Store
from retrofit_agent.transport.link import Link, describe, ssl_context
from retrofit_agent.transport.protocol import PROTOCOL, Ack

MAX_RETRY_AFTER_S = 3600.0  # a server asking for more is answered sooner
IDLE_CLOSE_S = 5.0  # the connection is closed when the next attempt is further away
CONTENT_REFUSED = (400, 413, 422)  # this batch will never be accepted as it is
TRANSIENT = (408, 425, 429)  # and every 5xx
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SENT = "sent"  # acknowledged: rows marked uploaded (or quarantined, if the server said so)
    EMPTY = "empty"  # nothing pending
    WINDOW = "window"  # outside every upload window
    BUDGET = "budget"  # the next batch would exceed today's byte budget
    WAIT = "wait"  # called before the backoff or rate delay was over: nothing done
    FAILED = "failed"  # transient failure (network, timeout, 5xx, 429, garbage): retried
    REJECTED = "rejected"  # content refused (400/413/422): batch halved or its row quarantined
    REFUSED = "refused"  # the endpoint refuses this device (401/403/404, certificate...)


REQUESTED = (Outcome.SENT, Outcome.FAILED, Outcome.REJECTED, Outcome.REFUSED)


@dataclass(frozen=True)
class Step:
    """What one `run_once` did, and how long to wait before calling it again."""

    outcome: Outcome
    wait_s: float
    sent_bytes: int = 0
    uploaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    error: str | None = None
    events_uploaded: int = 0
    events_quarantined: int = 0
    event_duplicates: int = 0


@dataclass
class DrainStats:
    """Totals over a drain, for the operator and the tests."""

    requests: int = 0
    uploaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    events_uploaded: int = 0
    events_quarantined: int = 0
    event_duplicates: int = 0
    sent_bytes: int = 0
    failures: int = 0
    stopped: str = ""
    wall_s: float = 0.0

    def add(self, step: Step) -> None:
        self.requests += step.outcome in REQUESTED
        self.failures += step.outcome in (Outcome.FAILED, Outcome.REFUSED)
        self.uploaded += step.uploaded
        self.quarantined += step.quarantined
        self.duplicates += step.duplicates
        self.events_uploaded += step.events_uploaded
        self.events_quarantined += step.events_quarantined
        self.event_duplicates += step.event_duplicates
        self.sent_bytes += step.sent_bytes
        self.stopped = step.outcome

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Items = list[tuple[int, dict[str, Any]]]  # (seq, the row or event as sent)


@dataclass(frozen=True)
class Payload:
    """One request body and the seqs of the rows and events it carries."""

    batch_id: str
    seqs: list[int]
    body: bytes
    event_seqs: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.seqs) + len(self.event_seqs)


def encode(rows: Items, events: Items | None = None) -> Payload:
    """A gzip-compressed batch (protocol.Batch) of (seq, item) pairs, with a fresh batch id."""
    batch_id = uuid.uuid4().hex
    envelope: dict[str, Any] = {"protocol": PROTOCOL, "batch_id": batch_id}
    envelope["rows"] = [row for _, row in rows]
    events = events or []
    if events:  # a batch of rows alone is what every version-1 server takes
        envelope["events"] = [event for _, event in events]
    text = json.dumps(envelope, separators=(",", ":")).encode()
    body = gzip.compress(text, mtime=0)
    return Payload(batch_id, [seq for seq, _ in rows], body, tuple(seq for seq, _ in events))


def halve(rows: Items, events: Items) -> tuple[Items, Items]:
    """The first half of a batch's items, events first (the order they are sent in)."""
    keep = (len(rows) + len(events)) // 2
    return rows[: max(0, keep - len(events))], events[:keep]


def read_ack(data: bytes, payload: Payload) -> Ack:
    """The answer as the acknowledgement of `payload`; ValueError when it is anything else."""
    try:
        ack = Ack.model_validate_json(data)
    except ValidationError as exc:
        raise ValueError(f"not an acknowledgement: {first_error(exc, 'answer')}") from None
    if ack.batch_id != payload.batch_id:
        raise ValueError(f"acknowledges batch {ack.batch_id!r}, not {payload.batch_id!r}")
    named = set(ack.accepted) | {r.seq for r in ack.rejected}
    if not named <= set(payload.seqs):
        raise ValueError(f"names seqs that were not sent: {sorted(named - set(payload.seqs))}")
    events = set(ack.events_accepted) | {r.seq for r in ack.events_rejected}
    if not events <= set(payload.event_seqs):
        unsent = sorted(events - set(payload.event_seqs))
        raise ValueError(f"names events that were not sent: {unsent}")
    if not named and not events:
        raise ValueError("names none of the batch's rows and events")
    return ack


def retry_after(value: str | None) -> float:
    """Seconds asked for by a Retry-After header (seconds or an HTTP date), capped; 0 if none."""
    if not value:
        return 0.0
    try:
        seconds = float(int(value))
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def seconds_until_open(windows: list[Window], now: datetime) -> float:
    """0 inside a window (or without windows), else the seconds until the next one opens."""
    if not windows:
        return 0.0
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    t = (now - day).total_seconds()
    waits = []
    for start, end in windows:
        s = start.hour * 3600 + start.minute * 60 + start.second
        e = end.hour * 3600 + end.minute * 60 + end.second
        if (s <= t < e) if s < e else (t >= s or t < e):
            return 0.0
        waits.append((s - t) % 86400)
    return min(waits)


def seconds_until_tomorrow(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


def read_token(path: Path) -> str:
    """The device token; refused if it could not be sent verbatim in a header."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"upload.token_file {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"upload.token_file {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"upload.token_file {path}: not text") from None
    if not BEARER_TOKEN.fullmatch(token):  # the message must never quote the token
        raise ConfigError(f"upload.token_file {path}: not a bearer token (empty or bad characters)")
    return token


class Uploader:
    """Sends pending rows of `store` to `config.endpoint`, from one thread only.

    In the service, give it a thread and its own Store on the queue's database (SQLite
    connections stay in their thread); then `uploader.drain(stop)`, or step by step:
    `step = uploader.run_once(); stop.wait(step.wait_s)`.
    """

    def __init__(
        self,
        config: UploadConfig,
        store: Store,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        if config.endpoint is None:
            raise ConfigError("upload.endpoint: not set (the ingest server's https:// URL)")
        self.config = config
        self.store = store
        self.budget = UploadBudget(store.db, store.path)
        self._token = read_token(config.token_file)
        self._headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"retrofit-agent/{__version__}",
        }
        self._link = Link(config.endpoint, config.timeout_s, ssl_context(config))
        self._clock = clock
        rand = (rng or random.Random()).random
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s, "full", rand)
        self._batch_rows = config.batch_rows  # halved until a refused row is isolated
        self._next_at = 0.0  # time.monotonic() before which no request goes out

    def run_once(self) -> Step:
        """Send at most one batch; the caller should wait `wait_s` before the next call."""
        if (wait := self._next_at - time.monotonic()) > 0:
            return Step(Outcome.WAIT, wait)
        now = self._clock()
        if (wait := seconds_until_open(self.config.windows, now)) > 0:
            return self._idle(Outcome.WINDOW, wait)
        events = self._pending_events()
        rows = self._pending(self._batch_rows - len(events))
        if not rows and not events:
            return self._idle(Outcome.EMPTY, self.config.poll_interval_s)
        day = now.date().isoformat()
        payload = self._fit(rows, events, self._budget_left(day))
        if payload is None:
            return self._idle(Outcome.BUDGET, seconds_until_tomorrow(now))
        step = self._send(payload, day)
        if step.wait_s > IDLE_CLOSE_S:
            self._link.close()
        return step

    def drain(self, stop: threading.Event | None = None, once: bool = False) -> DrainStats:
        """Run steps until `stop` is set or Ctrl-C. With `once`, also stop when the queue is
        empty or the window or budget closes, raise UploadRefused on a refusal and UploadError
        after `give_up_after` failures in a row (a quarantined row counts as one)."""
        stop = stop or threading.Event()
        stats = DrainStats()
        started = time.monotonic()
        failed_in_row = 0
        try:
            while not stop.is_set():
                step = self.run_once()
                stats.add(step)
                stats.wall_s = time.monotonic() - started
                if step.outcome is Outcome.SENT:
                    failed_in_row = 0
                failed_in_row += step.outcome is Outcome.FAILED or (
                    step.outcome is Outcome.REJECTED
                    and step.quarantined + step.events_quarantined > 0
                )
                if once:
                    if step.outcome in (Outcome.EMPTY, Outcome.WINDOW, Outcome.BUDGET):
                        break
                    if step.outcome is Outcome.REFUSED:
                        raise UploadRefused(f"{self.config.endpoint}: {step.error}")
                    if failed_in_row >= self.config.give_up_after:
                        raise UploadError(
                            f"{self.config.endpoint}: gave up after {failed_in_row} failed "
                            f"attempts in a row, the last: {step.error}"
                        )
                stop.wait(step.wait_s)
        except KeyboardInterrupt:
            stats.stopped = "interrupted"
        return stats

    def close(self) -> None:
        self._link.close()

    def _idle(self, outcome: Outcome, wait_s: float) -> Step:
        self._link.close()
        return Step(outcome, wait_s)

    def _pending_events(self) -> Items:
        """Closed events not yet uploaded, up to a batch, as (seq, event)."""
        newest_first = self.config.order == "newest"
        rows = self.store.events.pending(self._batch_rows, newest_first)
        return [(seq, json.loads(event)) for seq, event in rows]

    def _pending(self, limit: int) -> Items:
        """Pending rows in upload order as (seq, row); a row whose stored JSON is broken is
        quarantined here, since no server could accept it."""
        newest_first = self.config.order == "newest"
        while limit > 0 and (raw := self.store.pending_rows(limit, newest_first)):
            rows, broken = [], []
            for seq, header, embedding in raw:
                try:
                    row = json.loads(header)
                except ValueError:
                    broken.append(seq)
                    continue
                if self.config.include_embeddings:
                    row["embedding"] = base64.b64encode(embedding).decode()
                rows.append((seq, row))
            if broken:
                self.store.set_state(broken, QUARANTINED)
                log.warning(
                    "quarantined rows with broken JSON",
                    extra=kv(rows=len(broken), seqs=",".join(map(str, broken))),
                )
            if rows:
                return rows
        return []

    def _budget_left(self, day: str) -> float:
        if self.config.max_bytes_per_day is None:
            return float("inf")
        return self.config.max_bytes_per_day - self.budget.spent(day)

    def _fit(self, rows: Items, events: Items, budget_left: float) -> Payload | None:
        """The batch, halved until it fits batch_bytes (one item always goes) and the budget."""
        limit = min(self.config.batch_bytes, budget_left)
        payload = encode(rows, events)
        while len(payload.body) > limit and len(payload) > 1:
            rows, events = halve(rows, events)
            payload = encode(rows, events)
        return payload if len(payload.body) <= budget_left else None

    def _send(self, payload: Payload, day: str) -> Step:
        self.budget.add(day, len(payload.body))  # before: a crash cannot hide it
        started = time.monotonic()
        if self.config.max_bytes_per_s:
            self._next_at = started + len(payload.body) / self.config.max_bytes_per_s
        try:
            status, headers, data = self._link.post(payload.body, self._headers)
        except ssl.SSLCertVerificationError as exc:
            return self._failed(Outcome.REFUSED, payload, f"certificate: {exc.verify_message}")
        except (OSError, http.client.HTTPException) as exc:
            error = self._redact(describe(exc, self.config.timeout_s))  # may quote the server
            return self._failed(Outcome.FAILED, payload, error)
        if 200 <= status < 300:
            return self._acknowledged(payload, data)
        error = self._redact(f"HTTP {status}: {data[:200].decode(errors='replace')}")
        if status in CONTENT_REFUSED:
            return self._content_refused(payload, error)
        if status in TRANSIENT or status >= 500:
            wait = retry_after(headers.get("Retry-After"))
            return self._failed(Outcome.FAILED, payload, error, wait)
        return self._failed(Outcome.REFUSED, payload, error)

    def _acknowledged(self, payload: Payload, data: bytes) -> Step:
        try:
            ack = read_ack(data, payload)
        except ValueError as exc:
            return self._failed(Outcome.FAILED, payload, self._redact(f"unusable answer: {exc}"))
        rejected = [r.seq for r in ack.rejected]
        self.store.set_state(ack.accepted, UPLOADED)
        self.store.set_state(rejected, QUARANTINED)
        self.store.events.set_state(ack.events_accepted, UPLOADED)
        self.store.events.set_state([r.seq for r in ack.events_rejected], QUARANTINED)
        for kind, refused in (("row", ack.rejected), ("event", ack.events_rejected)):
            for row in refused:
                log.warning(
                    f"quarantined {'a row' if kind == 'row' else 'an event'} the server rejected",
                    extra=kv(seq=row.seq, error=self._redact(row.error)),
                )
        self._backoff.reset()
        log.info("batch uploaded", extra=kv(batch_id=payload.batch_id, rows=len(ack.accepted)))
        return Step(
            Outcome.SENT,
            self._wait(),
            len(payload.body),
            uploaded=len(ack.accepted),
            quarantined=len(rejected),
            duplicates=ack.duplicates,
            events_uploaded=len(ack.events_accepted),
            events_quarantined=len(ack.events_rejected),
            event_duplicates=ack.event_duplicates,
        )

    def _content_refused(self, payload: Payload, error: str) -> Step:
        """Halve the batch until the refused row is alone; then quarantine it. Batches that
        are accepted meanwhile keep the small size, so the search stays near the culprit."""
        if len(payload) > 1:
            self._batch_rows = len(payload) // 2
            log.warning(
                "batch refused, trying half of it",
                extra=kv(rows=len(payload), next_rows=self._batch_rows, error=error),
            )
            return Step(Outcome.REJECTED, self._wait(), len(payload.body), error=error)
        self._batch_rows = self.config.batch_rows
        if payload.event_seqs:
            self.store.events.set_state(payload.event_seqs, QUARANTINED)
            log.warning(
                "quarantined an event the server refused",
                extra=kv(seq=payload.event_seqs[0], error=error),
            )
            return self._failed(Outcome.REJECTED, payload, error, events_quarantined=1)
        self.store.set_state(payload.seqs, QUARANTINED)
        log.warning(
            "quarantined a row the server refused", extra=kv(seq=payload.seqs[0], error=error)
        )
        return self._failed(Outcome.REJECTED, payload, error, quarantined=1)

    def _failed(
        self,
        outcome: Outcome,
        payload: Payload,
        error: str,
        retry_after_s: float = 0.0,
        quarantined: int = 0,
        events_quarantined: int = 0,
    ) -> Step:
        delay = self._backoff.next_delay(at_least_s=retry_after_s)
        self._next_at = max(self._next_at, time.monotonic() + delay)
        log.warning(
            f"upload {outcome}",
            extra=kv(rows=len(payload), error=error, next_try_in_s=delay),
        )
        return Step(
            outcome,
            self._wait(),
            len(payload.body),
            quarantined=quarantined,
            error=error,
            events_quarantined=events_quarantined,
        )

    def _redact(self, text: str) -> str:
        """Server text as it may be logged: a server may echo the Authorization header back."""
        return text.replace(self._token, "<token>")

    def _wait(self) -> float:
        return max(0.0, self._next_at - time.monotonic())


class UploadThread:
    """The uploader inside the service: its own thread and its own connection to the queue.

    SQLite connections stay in the thread that made them, and an upload may block for a
    timeout on a bad link, so it never runs on the frame loop. Token and endpoint problems are
    raised at start (in the caller's thread); later failures are the uploader's to retry.
    """

    def __init__(self, config: UploadConfig, open_store: Callable[[], Store]) -> None:
        read_token(config.token_file)  # a missing token fails the service at start
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(config, open_store), name="uploader", daemon=True
        )
        self._thread.start()

    def _run(self, config: UploadConfig, open_store: Callable[[], Store]) -> None:
        store = open_store()
        uploader = Uploader(config, store)
        try:
            uploader.drain(self._stop)
        except Exception:
            log.exception("uploader stopped; observations stay queued until a restart")
        finally:
            uploader.close()
            store.close()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
