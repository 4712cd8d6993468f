"""The uploader against the reference ingest server on 127.0.0.1, well behaved or not."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import random
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from helpers.ingest_server import (
    TOKEN,
    Backend,
    FaultyServer,
    backend,
    self_signed_cert,
    server_tls,
    serving,
)
from helpers.logs import log_text
from helpers.observations import add

from retrofit_agent.config import UploadConfig
from retrofit_agent.errors import ConfigError, UploadError, UploadRefused
from retrofit_agent.fleet.sqlite_store import SqliteStore
from retrofit_agent.store.budget import UploadBudget
from retrofit_agent.store.queue import PENDING, QUARANTINED, UPLOADED, Store
from retrofit_agent.transport.upload import (
    MAX_RETRY_AFTER_S,
    Outcome,
    Payload,
    Uploader,
    read_ack,
    retry_after,
    seconds_until_open,
)

ROWS = 100


@pytest.fixture
def queue(tmp_path: Path) -> Store:
    store = Store(tmp_path / "queue.db", commit_every=1000)
    add(store, ROWS)
    store.flush()
    yield store
    store.close()


@pytest.fixture
def database(tmp_path: Path) -> Backend:
    """The fleet app on a SQLite store, for a FaultyServer to stand in front of."""
    store = SqliteStore(tmp_path / "ingest.db")
    with backend(store) as running:
        yield running
    store.close()


def config(url: str, tmp_path: Path, **overrides) -> UploadConfig:
    """Fast timings: a test must finish in seconds even when every fault fires."""
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    settings = dict(
        endpoint=url,
        token_file=token,
        timeout_s=0.5,
        backoff_base_s=0.05,
        backoff_cap_s=0.4,
        give_up_after=20,
        batch_rows=20,
    )
    return UploadConfig(**{**settings, **overrides})


def uploader(url: str, tmp_path: Path, store: Store, **overrides) -> Uploader:
    return Uploader(config(url, tmp_path, **overrides), store, rng=random.Random(7))


def held(server: FaultyServer) -> list[int]:
    return [seq for _, seq in server.backend.stored_keys()]


def states(store: Store) -> dict[str, int]:
    stats = store.stats()
    return {k: stats[k] for k in (PENDING, UPLOADED, QUARANTINED)}


def test_happy_path_with_embeddings(queue, database, tmp_path):
    with serving(FaultyServer(database, client_db=queue.path)) as server:
        up = uploader(server.url, tmp_path, queue, include_embeddings=True)
        stats = up.drain(once=True)
    assert held(server) == list(range(1, ROWS + 1))
    assert states(queue) == {PENDING: 0, UPLOADED: ROWS, QUARANTINED: 0}
    assert (stats.requests, stats.uploaded, stats.duplicates) == (5, ROWS, 0)
    assert stats.stopped == "empty"
    today = datetime.now(UTC).date().isoformat()
    assert stats.sent_bytes == UploadBudget(queue.db, queue.path).spent(today)
    assert server.uploaded_without_ack == set()
    with contextlib.closing(sqlite3.connect(tmp_path / "ingest.db")) as conn:
        stored = dict(conn.execute("SELECT seq, embedding FROM observations"))
    assert all(stored[o.seq] == o.embedding for o in queue.observations())


def test_every_fault_converges_to_exactly_once(queue, database, tmp_path, caplog):
    faults = ["500", "429", "reset", "hang", "drop_ack", "slow", "garbage", "500"]
    with serving(FaultyServer(database, faults, client_db=queue.path)) as server:
        up = uploader(server.url, tmp_path, queue)
        started = time.monotonic()
        stats = up.drain(once=True)
        elapsed = time.monotonic() - started
    # each fault but "slow" costs one request, then each of the 5 batches is acknowledged once
    assert stats.requests == len(server.requests) == len(faults) - 1 + ROWS // 20
    assert held(server) == list(range(1, ROWS + 1))
    assert stats.duplicates == 20  # the batch whose acknowledgement was dropped, sent again
    assert states(queue) == {PENDING: 0, UPLOADED: ROWS, QUARANTINED: 0}
    assert server.uploaded_without_ack == set()
    assert min(server.gaps_after("429")) >= 1.0  # Retry-After: 1 was honoured
    assert elapsed < 10
    assert TOKEN not in log_text(caplog.records)
    print(f"\nfault test converged: {stats.requests} requests in {elapsed:.2f} s")


def test_a_dead_server_gets_a_bounded_number_of_requests(queue, database, tmp_path):
    with serving(FaultyServer(database, ["500"] * 1000)) as server:
        up = uploader(server.url, tmp_path, queue, backoff_cap_s=0.2)
        assert up.run_once().outcome is Outcome.FAILED
        early = up.run_once()  # called again at once: refused locally, no request
        assert early.outcome is Outcome.WAIT and early.wait_s > 0 and len(server.requests) == 1
        stop = threading.Event()
        threading.Timer(1.5, stop.set).start()
        stats = up.drain(stop)
    # full jitter under a 0.2 s cap averages 0.1 s a wait: about 15 requests, never hundreds
    assert 5 <= len(server.requests) <= 40
    assert stats.failures == stats.requests and stats.uploaded == 0
    assert states(queue)[PENDING] == ROWS


def test_retry_after_parsing():
    assert retry_after(None) == 0 and retry_after("soon") == 0
    assert retry_after("3") == 3 and retry_after("-5") == 0
    assert retry_after(str(10**9)) == MAX_RETRY_AFTER_S
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 < retry_after(in_a_minute) <= 60


def test_an_answer_is_only_an_ack_for_the_batch_it_names():
    payload = Payload("b1", [1, 2, 3], b"")

    def ack(**fields):
        return json.dumps({"protocol": 1, "batch_id": "b1", "accepted": [1], **fields}).encode()

    assert read_ack(ack(), payload).accepted == [1]
    for bad in [
        b"",
        b"<html>",
        b"[]",
        ack(batch_id="b2"),
        ack(accepted=[1, 9]),
        ack(accepted=[]),
        ack(accepted=["1"]),
        ack(protocol=2),
    ]:
        with pytest.raises(ValueError):
            read_ack(bad, payload)


def test_rows_the_server_rejects_are_quarantined(queue, database, tmp_path):
    (text,) = queue.db.execute("SELECT header FROM observations WHERE seq=7").fetchone()
    header = json.loads(text)
    del header["source"]  # valid JSON, not a valid observation
    queue.db.execute("UPDATE observations SET header=? WHERE seq=7", [json.dumps(header)])
    queue.db.execute("UPDATE observations SET header='{broken' WHERE seq=8")
    with serving(FaultyServer(database)) as server:
        stats = uploader(server.url, tmp_path, queue).drain(once=True)
    assert held(server) == [s for s in range(1, ROWS + 1) if s not in (7, 8)]
    assert states(queue) == {PENDING: 0, UPLOADED: ROWS - 2, QUARANTINED: 2}
    assert stats.quarantined == 1  # 8 never left the device: its stored JSON is broken


def test_a_batch_refused_whole_is_halved_until_the_bad_row_is_quarantined(
    queue, database, tmp_path
):
    with serving(FaultyServer(database, refuse_seq=7)) as server:
        stats = uploader(server.url, tmp_path, queue).drain(once=True)
    assert held(server) == [s for s in range(1, ROWS + 1) if s != 7]
    assert states(queue) == {PENDING: 0, UPLOADED: ROWS - 1, QUARANTINED: 1}
    assert [o.seq for o in queue.observations(QUARANTINED)] == [7]
    # 1-20 refused, 1-10 refused, 1-5 ok, 6-10 refused, 6-7 refused, 6 ok, 7 quarantined,
    # then 8-100 in 5 batches of 20 again
    assert stats.requests == 12


def test_a_server_refusing_everything_quarantines_slowly_and_once_gives_up(
    queue, database, tmp_path
):
    with serving(FaultyServer(database, ["400"] * 1000)) as server:
        up = uploader(server.url, tmp_path, queue, batch_rows=4, give_up_after=3)
        halved = [up.run_once(), up.run_once()]  # 4 rows refused, then 2: no waiting
        assert [(s.outcome, s.wait_s, s.quarantined) for s in halved] == [
            (Outcome.REJECTED, 0, 0)
        ] * 2
        alone = up.run_once()  # the first row alone: quarantined, then the backoff
        assert (alone.outcome, alone.quarantined) == (Outcome.REJECTED, 1) and alone.wait_s > 0
        with pytest.raises(UploadError, match="gave up after 3 failed attempts.*HTTP 400"):
            up.drain(once=True)
    assert len(server.requests) == 12  # (4 -> 2 -> 1, quarantine) four times
    assert states(queue) == {PENDING: ROWS - 4, UPLOADED: 0, QUARANTINED: 4}


def test_budget_stops_uploads_and_resumes_the_next_day(queue, database, tmp_path):
    now = [datetime(2026, 11, 29, 23, 0, tzinfo=UTC)]
    budget = 1500
    with serving(FaultyServer(database, client_db=queue.path)) as server:
        settings = config(server.url, tmp_path, max_bytes_per_day=budget, batch_rows=10)
        days = 0
        while states(queue)[PENDING] and days < 30:
            up = Uploader(settings, queue, clock=lambda: now[0])
            stats = up.drain(once=True)
            spent = UploadBudget(queue.db, queue.path).spent(now[0].date().isoformat())
            assert stats.sent_bytes == spent <= budget
            assert stats.stopped in ("budget", "empty") and stats.uploaded > 0
            if stats.stopped == "budget":  # a restart the same day does not reset the budget
                step = Uploader(settings, queue, clock=lambda: now[0]).run_once()
                assert step.outcome is Outcome.BUDGET and step.wait_s == 3600
            now[0] += timedelta(days=1)
            days += 1
        assert 1 < days < 30 and server.uploaded_without_ack == set()
    assert held(server) == list(range(1, ROWS + 1))


def test_upload_windows(queue, database, tmp_path):
    windows = ["22:00-06:00", "12:00-12:30"]
    at = [datetime(2026, 11, 29, 9, 0, tzinfo=UTC)]
    with serving(FaultyServer(database)) as server:
        up = Uploader(config(server.url, tmp_path, windows=windows), queue, clock=lambda: at[0])
        step = up.run_once()
        assert (step.outcome, step.wait_s, server.requests) == (Outcome.WINDOW, 3 * 3600, [])
        at[0] = datetime(2026, 11, 30, 5, 59, tzinfo=UTC)  # inside the one past midnight
        assert up.run_once().outcome is Outcome.SENT


def test_seconds_until_open():
    windows = UploadConfig(windows=["22:00-06:00", "12:00-12:30"]).windows
    day = datetime(2026, 11, 29, tzinfo=UTC)
    assert seconds_until_open([], day) == 0
    assert seconds_until_open(windows, day + timedelta(hours=23)) == 0
    assert seconds_until_open(windows, day + timedelta(hours=3)) == 0
    assert seconds_until_open(windows, day + timedelta(hours=6)) == 6 * 3600
    assert seconds_until_open(windows, day + timedelta(hours=12, minutes=30)) == 9.5 * 3600


def test_rate_limit_paces_requests(queue, database, tmp_path):
    with serving(FaultyServer(database)) as server:
        up = uploader(server.url, tmp_path, queue, max_bytes_per_s=4000)
        stats = up.drain(once=True)
    times = [t for t, _ in server.requests]
    assert stats.uploaded == ROWS
    assert times[-1] - times[0] >= 0.95 * (stats.sent_bytes - stats.sent_bytes / 5) / 4000


def test_newest_first(queue, database, tmp_path):
    with serving(FaultyServer(database)) as server:
        assert uploader(server.url, tmp_path, queue, order="newest").run_once().uploaded == 20
    assert held(server) == list(range(ROWS - 19, ROWS + 1))


def test_wrong_token_is_refused_and_never_logged(queue, database, tmp_path, caplog):
    database.store.revoke_device("cam-1")  # the token the device holds is no longer valid
    with (
        serving(FaultyServer(database)) as server,
        pytest.raises(UploadRefused, match="HTTP 401") as err,
    ):
        uploader(server.url, tmp_path, queue).drain(once=True)
    assert err.value.exit_code == 77
    assert states(queue)[PENDING] == ROWS and held(server) == []
    assert TOKEN not in log_text(caplog.records) and TOKEN not in str(err.value)


def test_unreachable_host_gives_up_after_the_configured_failures(queue, tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = uploader(f"http://127.0.0.1:{port}/v1/observations", tmp_path, queue, give_up_after=3)
    with pytest.raises(UploadError, match="gave up after 3 failed attempts.*refused") as err:
        up.drain(once=True)
    assert err.value.exit_code == 75 and states(queue)[PENDING] == ROWS


def test_a_server_answering_garbage_marks_nothing(queue, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def babble():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\nnot http at all\r\n")

    threading.Thread(target=babble, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/observations"
    try:
        with pytest.raises(UploadError, match="gave up after 2 failed"):
            uploader(url, tmp_path, queue, give_up_after=2).drain(once=True)
    finally:
        stop.set()
        listener.close()
    assert states(queue)[PENDING] == ROWS


def test_tls_certificate_is_checked_unless_trusted_or_allowed(queue, database, tmp_path, caplog):
    cert, key = self_signed_cert(tmp_path)
    with serving(FaultyServer(database, ssl_context=server_tls(cert, key))) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with pytest.raises(UploadRefused, match="certificate: self.signed certificate"):
            uploader(server.url, tmp_path, queue).drain(once=True)
        assert held(server) == [] and states(queue)[PENDING] == ROWS
        trusted = uploader(server.url, tmp_path, queue, ca_file=cert, batch_rows=50)
        assert trusted.run_once().uploaded == 50
        insecure = uploader(server.url, tmp_path, queue, tls_verify=False)
        assert insecure.drain(once=True).uploaded == 50
    assert "tls_verify is false" in caplog.text
    assert held(server) == list(range(1, ROWS + 1))


def test_missing_or_bad_token_file(queue, tmp_path):
    settings = config("https://ingest.invalid/v1/observations", tmp_path)
    with pytest.raises(ConfigError, match=r"upload.token_file .*absent: no such file"):
        Uploader(settings.model_copy(update={"token_file": tmp_path / "absent"}), queue)
    secret = "sec ret\nwith-newline"
    settings.token_file.write_text(secret)
    with pytest.raises(ConfigError, match="not a bearer token") as err:
        Uploader(settings, queue)
    assert "sec ret" not in str(err.value)
    with pytest.raises(ConfigError, match="upload.endpoint: not set"):
        Uploader(UploadConfig(token_file=settings.token_file), queue)


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("https://ingest.example.com/v1/observations", True),
        ("http://127.0.0.1:8080/x", True),
        ("http://localhost/x", True),
        ("http://ingest.example.com/x", False),
        ("ftp://x/y", False),
        ("ingest.example.com", False),
    ],
)
def test_endpoint_must_be_https_except_on_loopback(endpoint, ok):
    if ok:
        assert UploadConfig(endpoint=endpoint).endpoint == endpoint
    else:
        with pytest.raises(ValueError, match="upload|https"):
            UploadConfig(endpoint=endpoint)


def test_backoff_base_above_its_cap_is_a_config_error():
    with pytest.raises(ValueError, match="backoff_base_s must not exceed backoff_cap_s"):
        UploadConfig(backoff_base_s=10.0, backoff_cap_s=5.0)


def test_bad_windows_are_config_errors():
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        UploadConfig(windows=["25:00-06:00"])
    with pytest.raises(ValueError, match="cannot end where it starts"):
        UploadConfig(windows=["06:00-06:00"])


def test_log_lines_name_what_failed(queue, database, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with serving(FaultyServer(database, ["500"])) as server:
        uploader(server.url, tmp_path, queue).drain(once=True)
    assert 'upload failed rows=20 error="HTTP 500: ' in log_text(caplog.records)


class EchoingHandler(http.server.BaseHTTPRequestHandler):
    """Refuses every batch (400), quoting the request's Authorization header back."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = f"bad batch, sent with {self.headers['Authorization']}".encode()
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_a_token_echoed_by_the_server_is_never_logged(queue, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server = http.server.HTTPServer(("127.0.0.1", 0), EchoingHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/observations"
    try:
        up = uploader(url, tmp_path, queue, batch_rows=2)
        steps = [up.run_once(), up.run_once()]  # 2 rows refused, then the first alone
    finally:
        server.shutdown()
        server.server_close()
    assert [s.quarantined for s in steps] == [0, 1]
    text = log_text(caplog.records)
    assert "batch refused, trying half of it" in text and "<token>" in text
    assert TOKEN not in text and all(TOKEN not in (s.error or "") for s in steps)
