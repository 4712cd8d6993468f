"""Label events in the real service: closed cleanly on SIGTERM, and closed as interrupted at
the next start after kill -9 (the fake camera, the tiny bundle: its exclusive groups always
name a winner, so events open within a few frames)."""

import contextlib
import json
import signal
import sqlite3

import pytest
from helpers.agent_process import AgentProcess, config_text

KEEP = "min_frames = 3\nend_frames = 3\nheartbeat_s = 60.0"


@pytest.fixture
def start(tmp_path):
    agents = []

    def start(config: str) -> AgentProcess:
        agent = AgentProcess(tmp_path, config)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def events(db) -> dict[int, tuple[str, dict]]:
    """seq -> (state, event) as the database holds them now."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT seq, state, event FROM events").fetchall()
    return {seq: (state, json.loads(event)) for seq, state, event in rows}


def stored_seqs(db) -> set[int]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM observations")}


def wait_for_open_events(agent: AgentProcess) -> dict[int, tuple[str, dict]]:
    agent.wait_for_log(r"committed rows=")
    agent.wait_metric("retrofit_agent_events_open", 1)
    for _ in range(100):  # the open events reach the database with the next batch
        found = events(agent.db)
        if any(state == "open" for state, _ in found.values()):
            return found
        agent.wait_metric(
            "retrofit_agent_frames_total", agent.metrics()["retrofit_agent_frames_total"] + 5
        )
    raise AssertionError("no open event in the database")


def test_sigterm_closes_open_events_as_stopped_with_their_best_frames(start, tmp_path, tiny_bundle):
    agent = start(config_text(tmp_path, tiny_bundle, keep=KEEP))
    wait_for_open_events(agent)
    assert agent.stop(signal.SIGTERM) == 0
    stored = events(agent.db)
    assert stored and all(state == "pending" for state, _ in stored.values())  # none left open
    reasons = {e["end_reason"] for _, e in stored.values()}
    assert "stopped" in reasons and reasons <= {"absent", "stopped"}
    seqs = stored_seqs(agent.db)
    assert all(e["best_seq"] in seqs for _, e in stored.values())  # every best frame stored
    assert all(e["seq"] not in seqs for _, e in stored.values())  # its own number


def test_kill_9_mid_event_then_restart_closes_it_as_interrupted(start, tmp_path, tiny_bundle):
    config = config_text(tmp_path, tiny_bundle, keep=KEEP)
    first = start(config)
    wait_for_open_events(first)
    first.proc.kill()
    assert first.wait() == -9
    left_open = {seq: e for seq, (state, e) in events(first.db).items() if state == "open"}
    assert left_open

    second = start(config)
    second.wait_for_log(rf"closed events a crash left open events={len(left_open)} ")
    after = events(second.db)
    for seq, before in left_open.items():
        state, event = after[seq]
        assert (state, event["end_reason"]) == ("pending", "interrupted")
        # it ends where the database last saw it, nothing of it invented
        assert {k: v for k, v in event.items() if k != "end_reason"} == {
            k: v for k, v in before.items() if k != "end_reason"
        }
    wait_for_open_events(second)
    assert second.stop(signal.SIGTERM) == 0
    new = {seq for seq in events(second.db) if seq not in after}
    assert new and min(new) > max(left_open)  # the restart's events: later numbers
    assert not any(state == "open" for state, _ in events(second.db).values())
