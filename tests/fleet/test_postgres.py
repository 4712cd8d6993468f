"""The PostgreSQL store and `retrofit-fleet serve` on it, end to end with the device's uploader."""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from helpers.cli import agent
from helpers.fleet_process import FleetServer, add_device
from helpers.ingest_server import stored_keys
from helpers.observations import add, observation
from helpers.paths import TESTS

from retrofit_agent.fleet.postgres_store import PostgresStore, partition_name
from retrofit_agent.fleet.store import StoredRow
from retrofit_agent.store.queue import Store

OLD_DAY = date(2026, 11, 29)  # helpers.observations' rows were captured then


def stored(seq: int, day: date = OLD_DAY, device: str = "cam-1") -> StoredRow:
    obs = observation(seq)
    captured = datetime.combine(day, obs.captured_utc.timetz())
    return StoredRow(device, seq, captured, obs.header_json().decode(), obs.embedding)


def test_partitions_ahead_on_demand_and_retention(pg_url):
    store = PostgresStore(pg_url)
    try:
        today = datetime.now(UTC)
        ahead = {partition_name(today.date() + timedelta(days=n)) for n in range(4)}
        assert ahead <= set(store.partitions())
        assert store.store_rows("b1", [stored(1), stored(2)]) == 2
        assert store.store_rows("b2", [stored(2), stored(3)]) == 1  # idempotent
        assert partition_name(OLD_DAY) in store.partitions()  # made on demand

        other = PostgresStore(pg_url)  # another ingest worker, or the retention job
        try:
            keep = (today.date() - OLD_DAY).days - 1  # OLD_DAY is the newest day dropped
            dropped = other.retention(keep, today)  # the day's observations and events
            assert dropped == [partition_name(OLD_DAY), partition_name(OLD_DAY, "events")]
        finally:
            other.close()
        assert partition_name(OLD_DAY) not in store.partitions()
        assert min(store.partitions()) > partition_name(OLD_DAY)
        # `store` still believes the dropped day exists: the insert recreates it
        assert store.store_rows("b3", [stored(4)]) == 1
        assert [s for _, s in stored_keys(store)] == [4]
    finally:
        store.close()


def test_ack_after_commit_a_kill_before_the_answer_is_a_duplicate_not_a_loss(pg_url, tmp_path):
    token = add_device(pg_url, "cam-1")
    marker = tmp_path / "committed"
    rows = [json.loads(observation(seq).model_dump_json()) for seq in range(1, 11)]

    def send(url: str, batch_id: str) -> http.client.HTTPResponse:
        body = json.dumps({"protocol": 1, "batch_id": batch_id, "rows": rows}).encode()
        conn = http.client.HTTPConnection(url.split("/")[2], timeout=30)
        conn.request("POST", "/v1/observations", gzip.compress(body), {
            "Content-Type": "application/json", "Content-Encoding": "gzip",
            "Authorization": f"Bearer {token}",
        })  # fmt: skip
        return conn.getresponse()

    held = [sys.executable, str(TESTS / "helpers" / "held_server.py")]
    with FleetServer(pg_url, marker, command=held) as server:

        def kill_when_committed() -> None:
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stop(signal.SIGKILL)

        killer = threading.Thread(target=kill_when_committed)
        killer.start()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            send(server.url, "first")
        killer.join()
    assert marker.read_text() == "10"  # committed, never acknowledged

    serve = ["--database", pg_url, "--port", 0, "--workers", 1, "--embedding-dim", 32]
    with FleetServer(*serve, "--max-age-days", 36_500) as server:
        response = send(server.url, "again")
        ack = json.loads(response.read())
    assert response.status == 200
    assert (ack["accepted"], ack["duplicates"]) == (list(range(1, 11)), 10)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM observations"
        ).fetchone() == (10, 10)


def test_the_devices_uploader_fills_the_backend(pg_url, tmp_path):
    """`retrofit-agent upload` against `retrofit-fleet serve` (2 workers) on PostgreSQL."""
    token_file = tmp_path / "token"
    token_file.write_text(add_device(pg_url, "cam-1") + "\n")
    queue = Store(tmp_path / "queue.db", commit_every=1000)
    added = add(queue, 300)
    queue.close()
    serve = ["--database", pg_url, "--port", 0, "--workers", 2, "--embedding-dim", 32]
    with FleetServer(*serve, "--max-age-days", 36_500) as server:
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[upload]\nendpoint = "{server.url}"\ntoken_file = "{token_file}"\n'
            "include_embeddings = true\nbatch_rows = 40\ntimeout_s = 10.0\n"
        )
        first = agent("--config", config, "upload", "--once", "--db", tmp_path / "queue.db")
        assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["uploaded"], summary["duplicates"]) == (300, 0)
    with psycopg.connect(pg_url) as conn:
        rows = dict(conn.execute("SELECT seq, embedding FROM observations").fetchall())
    assert sorted(rows) == list(range(1, 301))
    assert all(rows[o.seq] == o.embedding for o in added)


def test_query_partitions_are_pruned_by_time(pg_url):
    store = PostgresStore(pg_url)
    try:
        store.store_rows("b", [stored(1), stored(2, OLD_DAY + timedelta(days=1))])
        with psycopg.connect(pg_url) as conn:
            plan = "\n".join(r for (r,) in conn.execute(
                "EXPLAIN SELECT * FROM observations WHERE captured_utc >= %s AND captured_utc < %s",
                [datetime.combine(OLD_DAY, datetime.min.time(), UTC),
                 datetime.combine(OLD_DAY + timedelta(days=1), datetime.min.time(), UTC)],
            ))  # fmt: skip
        assert partition_name(OLD_DAY) in plan
        assert partition_name(OLD_DAY + timedelta(days=1)) not in plan
    finally:
        store.close()
