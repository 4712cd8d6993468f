"""`retrofit-agent upload` as an operator runs it: real processes, a real ingest server."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import agent, error_line
from helpers.fleet_process import FleetServer, add_device, sqlite_url
from helpers.ingest_server import (
    EVER,
    TOKEN,
    Backend,
    FaultyServer,
    backend,
    client_uploaded,
    serving,
    stored_keys,
)
from helpers.observations import add

from retrofit_agent.event import Event
from retrofit_agent.fleet.sqlite_store import SqliteStore
from retrofit_agent.fleet.store import ObservationQuery
from retrofit_agent.store.queue import Store

AGENT = [sys.executable, "-m", "retrofit_agent"]


def write_config(tmp_path: Path, endpoint: str, token: bool = True, **upload) -> Path:
    token_file = tmp_path / "token"
    if token:
        token_file.write_text(TOKEN + "\n")
    settings = {
        "endpoint": endpoint,
        "token_file": str(token_file),
        "timeout_s": 1.0,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        "give_up_after": 3,
        **upload,
    }
    lines = ["[upload]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_queue(path: Path, rows: int) -> Path:
    store = Store(path, commit_every=1000)
    add(store, rows)
    store.close()
    return path


@pytest.fixture
def database(tmp_path: Path) -> Backend:
    store = SqliteStore(tmp_path / "ingest.db")
    with backend(store) as running:
        yield running
    store.close()


def test_upload_once_drains_a_dry_run_of_the_real_video(tiny_bundle, real_video, tmp_path):
    db = tmp_path / "obs.db"
    agent(
        "--dry-run", real_video, "--model", tiny_bundle, "--db", db, "--no-publish", check_ok=True
    )
    database = sqlite_url(tmp_path / "ingest.db")
    (tmp_path / "token").write_text(add_device(database, socket.gethostname()))  # the dry run's id
    serve = ["--database", database, "--port", 0, "--workers", 1, "--embedding-dim", 32]
    with FleetServer(*serve) as server:
        config = write_config(tmp_path, server.url, token=False, include_embeddings=True)
        result = agent("--config", config, "upload", "--once", "--db", db, check_ok=True)
    summary = json.loads(result.stdout)
    with contextlib.closing(Store(db)) as queue:  # what the keep policy kept, all uploaded
        kept = sorted(seq for (seq,) in queue.db.execute("SELECT seq FROM observations"))
        events = queue.events.events()
    assert 0 < len(kept) < 221 and events
    assert (summary["uploaded"], summary["events_uploaded"]) == (len(kept), len(events))
    assert summary["stopped"] == "empty"
    assert summary["queue"] == {
        "pending": 0,
        "uploaded": len(kept),
        "quarantined": 0,
        "events": {"open": 0, "pending": 0, "uploaded": len(events), "quarantined": 0},
    }
    with contextlib.closing(SqliteStore(tmp_path / "ingest.db")) as received:
        assert [seq for _, seq in stored_keys(received)] == kept
        stored = [Event.model_validate_json(e) for e in received.events(ObservationQuery(*EVER))]
    assert sorted(stored, key=lambda e: e.seq) == events


def test_killed_mid_batch_then_restarted_loses_nothing(database, tmp_path):
    db = make_queue(tmp_path / "queue.db", 60)
    faults = ["ok", "store_and_hold"]  # batch 2 is stored, then its answer never comes
    with serving(FaultyServer(database, faults, client_db=db)) as server:
        config = write_config(tmp_path, server.url, batch_rows=20)
        cmd = [*AGENT, "--config", config, "upload", "--once", "--db", db]
        with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as first:
            held = server.held.wait(60)
            first.send_signal(signal.SIGKILL)
        assert held, first.stderr.read()
        assert client_uploaded(db) == set(range(1, 21))  # batch 2 stored, never acknowledged
        server.release.set()
        result = agent("upload", "--once", "--db", db, "--config", config, check_ok=True)
    summary = json.loads(result.stdout)
    assert (summary["uploaded"], summary["duplicates"]) == (40, 20)  # batch 2 sent again
    assert [seq for _, seq in database.stored_keys()] == list(range(1, 61))
    assert server.uploaded_without_ack == set()


def test_exit_codes_for_bad_input(database, tmp_path):
    db = make_queue(tmp_path / "queue.db", 5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    unreachable = write_config(tmp_path, f"http://127.0.0.1:{closed_port}/v1/observations")
    result = agent("--config", unreachable, "upload", "--once", "--db", db)
    assert result.returncode == 75
    assert "gave up after 3 failed attempts" in error_line(result)
    assert "retrofit-agent: warning: upload failed rows=5 error=" in result.stderr

    database.store.revoke_device("cam-1")
    with serving(FaultyServer(database)) as server:
        refused = agent(
            "--config", write_config(tmp_path, server.url), "upload", "--once", "--db", db
        )
    assert refused.returncode == 77 and "HTTP 401" in error_line(refused)
    assert TOKEN not in refused.stderr + refused.stdout

    (tmp_path / "token").unlink()
    no_token = agent(
        "--config", write_config(tmp_path, server.url, token=False), "upload", "--once", "--db", db
    )
    assert no_token.returncode == 78 and "token: no such file" in error_line(no_token)

    no_endpoint = agent("upload", "--once", "--db", db)
    assert no_endpoint.returncode == 78 and "upload.endpoint: not set" in error_line(no_endpoint)

    no_db = agent("upload", "--once", "--db", tmp_path / "absent.db")
    assert no_db.returncode == 74 and "no such observation database" in error_line(no_db)
    with contextlib.closing(Store(db)) as store:
        assert store.stats()["pending"] == 5
