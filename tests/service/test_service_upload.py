"""The service runs the uploader on its own thread: rows reach the ingest server as frames flow."""

import signal
import sqlite3
import time
from contextlib import closing

from helpers.agent_process import AgentProcess, config_text
from helpers.ingest_server import TOKEN, backend, client_uploaded

from retrofit_agent.fleet.sqlite_store import SqliteStore


def test_service_uploads_while_it_labels(tmp_path, tiny_bundle):
    (tmp_path / "token").write_text(TOKEN + "\n")
    store = SqliteStore(tmp_path / "ingest.db")
    with backend(store, devices={"cam-test": TOKEN}) as server:  # agent_process's device_id
        upload = (
            f'\n[upload]\nendpoint = "{server.url}"\ntoken_file = "{tmp_path / "token"}"\n'
            "batch_rows = 20\npoll_interval_s = 0.2\n"
        )
        agent = AgentProcess(tmp_path, config_text(tmp_path, tiny_bundle, extra=upload))
        try:
            agent.wait_notify("READY=1", timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(client_uploaded(agent.db)) < 40:
                time.sleep(0.2)
            assert agent.stop(signal.SIGTERM) == 0, "\n".join(agent.lines[-15:])
        finally:
            agent.close()
        uploaded = client_uploaded(agent.db)
        with closing(sqlite3.connect(tmp_path / "ingest.db")) as conn:
            received = {seq for (seq,) in conn.execute("SELECT seq FROM observations")}
    store.close()
    assert len(uploaded) >= 40
    assert uploaded <= received  # nothing marked uploaded that the server does not hold


def test_missing_token_fails_the_service_at_start(tmp_path, tiny_bundle):
    upload = f'\n[upload]\nendpoint = "http://127.0.0.1:9/x"\ntoken_file = "{tmp_path / "none"}"\n'
    agent = AgentProcess(tmp_path, config_text(tmp_path, tiny_bundle, extra=upload))
    try:
        assert agent.proc.wait(60) != 0
        agent.wait_for_log(r"cannot start: .*none")
    finally:
        agent.close()
