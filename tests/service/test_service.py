"""`retrofit-agent run` as a real process: notify protocol, camera faults, signals, start errors."""

import json
import os
import re
import shutil
import signal
import sqlite3
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from helpers.agent_process import AgentProcess, config_text
from helpers.manifests import rewrite_manifest
from helpers.metrics import parse_metrics

from retrofit_agent.bundle.labels import save_label_bank


@pytest.fixture
def start(tmp_path):
    """Start agent processes; each is killed at the end of the test if still running."""
    agents = []

    def start(config: str, **kwargs) -> AgentProcess:
        agent = AgentProcess(tmp_path, config, **kwargs)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def stored_seqs(db) -> list[int]:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [seq for (seq,) in conn.execute("SELECT seq FROM observations ORDER BY seq")]


def test_notify_watchdog_only_while_frames_flow_then_clean_stop(start, tmp_path, tiny_bundle):
    config = config_text(tmp_path, tiny_bundle, stall_timeout_s=30)
    config = config.replace('listen = ""', 'listen = "127.0.0.1:0"')  # HTTP and the textfile
    agent = start(config, watchdog_usec=1_000_000)  # ping every 0.5 s
    started = agent.wait_notify("READY=1", timeout=60)
    assert any(f.startswith("STATUS=camera up") for f in started)

    flowing = agent.notifications(2.5)
    assert flowing.count("WATCHDOG=1") >= 3, flowing

    url = agent.wait_for_log(r"running .*metrics=\"?(http://[^\s\"]+)")[1]
    with urllib.request.urlopen(url, timeout=5) as response:
        scraped = parse_metrics(response.read().decode())
    assert scraped["retrofit_agent_frames_total"] > 0
    assert scraped["retrofit_agent_camera_up"] == 1

    agent.cue("stall")  # frames stop; the stall timeout (30 s) is far off: the loop is stuck
    agent.notifications(1.0)  # the frame in flight may still ping
    stuck = agent.notifications(2.5)
    assert "WATCHDOG=1" not in stuck, stuck

    agent.cue("stall", on=False)
    resumed = agent.notifications(2.5)
    assert resumed.count("WATCHDOG=1") >= 2, resumed

    assert agent.stop(signal.SIGTERM) == 0
    assert "STOPPING=1" in agent.notifications(0.5)
    frames = int(agent.wait_for_log(r"stopped reason=signal frames=(\d+)")[1])
    seqs = stored_seqs(agent.db)
    assert len(seqs) == frames > 50  # the frame in flight finished and every row was flushed
    assert seqs == sorted(set(seqs))


def test_camera_faults_are_reopened_with_backoff_without_a_restart(start, tmp_path, tiny_bundle):
    agent = start(config_text(tmp_path, tiny_bundle, stall_timeout_s=1.0))
    agent.wait_metric("retrofit_agent_frames_total", 10)

    # the device vanishes: reads fail, reopening fails with growing delays, then it is back
    mark = len(agent.lines)
    agent.cue("absent")
    agent.wait_for_log(r"camera fault .*fault=lost", start=mark)
    agent.wait_for_log(r"cannot reopen camera .*attempt=4", start=mark)
    agent.cue("absent", on=False)
    agent.wait_for_log(r"camera reopened .*attempts=\d+", start=mark)
    delays = [
        float(m[1])
        for line in agent.lines[mark:]
        if (m := re.search(r"reopening camera .*in_s=([\d.]+)", line))
    ]
    for delay, step in zip(delays, [0.2, 0.4, 0.8, 0.8], strict=False):
        assert step / 2 <= delay <= step  # exponential, capped at reconnect_max_s, jittered

    # corrupt frames: after max_corrupt_frames (5) in a row the camera is reopened
    before = agent.metrics()["retrofit_agent_frames_total"]
    mark = len(agent.lines)
    agent.cue("corrupt")
    agent.wait_for_log(
        r"camera fault .*fault=corrupt reason=\"5 corrupt frames in a row\"", start=mark
    )
    agent.cue("corrupt", on=False)
    agent.wait_for_log(r"camera reopened", start=mark)

    # a stall: no frame within stall_timeout_s (1 s) counts as lost
    mark = len(agent.lines)
    agent.cue("stall")
    agent.wait_for_log(r"camera fault .*fault=lost reason=\".*no frame for 1 s\"", start=mark)
    agent.cue("stall", on=False)
    agent.wait_for_log(r"camera reopened", start=mark)

    metrics = agent.wait_metric("retrofit_agent_frames_total", before + 10)
    assert agent.proc.poll() is None  # the same process throughout
    assert agent.opens() == 4 and metrics["retrofit_agent_camera_reconnects_total"] == 3
    assert metrics['retrofit_agent_camera_faults_total{kind="lost"}'] == 2
    assert metrics['retrofit_agent_camera_faults_total{kind="corrupt"}'] == 1
    assert metrics['retrofit_agent_camera_faults_total{kind="open_failed"}'] >= 4
    assert metrics["retrofit_agent_frames_corrupt_total"] >= 5
    assert metrics["retrofit_agent_camera_up"] == 1
    assert agent.stop() == 0


def test_sighup_reloads_labels_and_config_keeping_the_camera(start, tmp_path, tiny_bundle):
    config = config_text(tmp_path, tiny_bundle)
    agent = start(config)
    agent.wait_metric("retrofit_agent_frames_total", 5)
    agent.wait_notify("READY=1")

    labels = tmp_path / "scene.npz"
    rng = np.random.default_rng(1)
    text = rng.normal(size=(2, 32))
    save_label_bank(labels, ["tunnel", "open_road"], ["scene", "scene"],
                    text / np.linalg.norm(text, axis=1, keepdims=True), [0.0, 0.0],
                    {"scene": "exclusive"})  # fmt: skip
    changed = config.replace("max_corrupt_frames = 5", "max_corrupt_frames = 7")
    changed = changed.replace("commit_every = 5", "commit_every = 6")  # needs a restart
    agent.config.write_text(f'labels = "{labels}"\n' + changed)
    mark = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log(r"reloaded model=tiny-test labels=2", start=mark)
    assert re.search(
        r"changed section takes effect at restart section=store", "\n".join(agent.lines)
    )
    reload_notes = agent.wait_notify("READY=1")
    assert "RELOADING=1" in reload_notes
    metrics = agent.wait_metric('retrofit_agent_labels_total{group="scene",label="tunnel"}', 0)
    agent.wait_metric('retrofit_agent_reloads_total{result="ok"}', 1)

    agent.config.write_text("this is [not toml")
    mark = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log(
        r"reload failed, keeping the running configuration error=.*invalid TOML", start=mark
    )
    frames = agent.metrics()["retrofit_agent_frames_total"]
    metrics = agent.wait_metric("retrofit_agent_frames_total", frames + 10)  # still labelling
    assert metrics['retrofit_agent_reloads_total{result="failed"}'] == 1
    assert agent.opens() == 1 and metrics["retrofit_agent_camera_reconnects_total"] == 0
    scene = [k for k in metrics if k.startswith('retrofit_agent_labels_total{group="scene"')]
    assert sum(metrics[k] for k in scene) > 0
    assert agent.stop() == 0


def damaged_copies(tmp_path, bundle):
    """Bundles (or a config line) that a SIGHUP must refuse, each a different way to fail."""
    empty_group = Path(shutil.copytree(bundle, tmp_path / "empty-group"))
    arrays = dict(np.load(bundle / "labels.npz"))
    arrays["group_names"] = np.append(arrays["group_names"], "empty")
    arrays["group_kinds"] = np.append(arrays["group_kinds"], "multi")
    np.savez(empty_group / "labels.npz", **arrays)
    rewrite_manifest(empty_group)  # hashes right: it loaded, then killed the first frame
    narrow = Path(shutil.copytree(bundle, tmp_path / "narrow"))
    manifest = narrow / "manifest.json"  # its own hash is in no file: edited as it lies
    manifest.write_text(manifest.read_text().replace('"shortest_side": 64', '"shortest_side": 32'))
    no_manifest = Path(shutil.copytree(bundle, tmp_path / "no-manifest"))
    (no_manifest / "manifest.json").unlink()
    (no_manifest / "manifest.json").mkdir()
    fifo = tmp_path / "labels-fifo.npz"
    os.mkfifo(fifo)
    return {
        "empty group": (f'model = "{empty_group}"', "group empty has no labels"),
        "shortest_side below size": (f'model = "{narrow}"', "shortest_side 32 must lie"),
        "manifest a directory": (f'model = "{no_manifest}"', "manifest is a directory"),
        "label bank a FIFO": (f'labels = "{fifo}"', r"label bank is a named pipe"),
    }


def test_a_reload_that_fails_any_way_keeps_the_running_bundle(start, tmp_path, tiny_bundle):
    """Before, an empty group loaded and then killed the service on its first frame (the unit
    restarted it into the same crash); a shortest_side below size raised a ValueError out of
    the reload; a FIFO as the label bank blocked it forever."""
    config = config_text(tmp_path, tiny_bundle)
    agent = start(config)
    agent.wait_metric("retrofit_agent_frames_total", 5)
    cases = damaged_copies(tmp_path, tiny_bundle)
    for line, error in cases.values():
        if line.startswith("model"):
            agent.config.write_text(config.replace(f'model = "{tiny_bundle}"', line))
        else:
            agent.config.write_text(line + "\n" + config)
        mark = len(agent.lines)
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for_log(
            rf"reload failed, keeping the running configuration .*{error}", start=mark
        )
        frames = agent.metrics()["retrofit_agent_frames_total"]
        agent.wait_metric("retrofit_agent_frames_total", frames + 5)  # still labelling
    metrics = agent.wait_metric('retrofit_agent_reloads_total{result="failed"}', len(cases))
    assert metrics['retrofit_agent_reloads_total{result="failed"}'] == len(cases)
    assert agent.proc.poll() is None and agent.opens() == 1
    assert agent.stop() == 0


def test_the_reader_thread_prepares_inputs_also_after_a_reload_to_another_size(
    start, tmp_path, tiny_bundle
):
    from helpers.bundle_factory import build_bundle

    small = build_bundle(tmp_path / "small", size=32, name="tiny-32")
    config = config_text(tmp_path, tiny_bundle)
    agent = start(config)
    metrics = agent.wait_metric("retrofit_agent_frames_total", 20)
    assert metrics["retrofit_agent_frames_preprocessed_inline_total"] == 0

    agent.config.write_text(config.replace(str(tiny_bundle), str(small)))
    mark = len(agent.lines)
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_for_log(r"reloaded model=tiny-32", start=mark)
    frames = agent.metrics()["retrofit_agent_frames_total"]
    metrics = agent.wait_metric("retrofit_agent_frames_total", frames + 20)
    # only the frames in flight at the reload (queued, handed, being prepared) were made again
    assert metrics["retrofit_agent_frames_preprocessed_inline_total"] <= 3
    assert agent.stop() == 0
    with closing(sqlite3.connect(agent.db)) as conn:
        models = [
            json.loads(h)["model"]["name"]
            for (h,) in conn.execute("SELECT header FROM observations ORDER BY seq")
        ]
    assert models[0] == "tiny-test" and models[-1] == "tiny-32"


def write_config(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("unknown key", 78, r"agent\.toml: service\.reconnect_max: unknown key"),
        ("no capture", 78, r"agent\.toml: capture: missing, `run` needs capture\.source"),
        ("camera absent", 66, r"/dev/video-fake0: cannot open camera"),
        ("no such device", 66, r"/dev/video97: cannot open camera"),
        ("bad bundle", 65, r"labels\.npz: sha256"),
        ("database unwritable", 74, r"obs\.db: cannot open observation database"),
    ],
)
def test_start_errors_are_one_line_with_a_documented_exit_code(
    start, tmp_path, bundle_copy, case, code, message
):
    config = config_text(tmp_path, bundle_copy)
    fake_camera = True
    if case == "unknown key":
        config = config.replace("[service]", "[service]\nreconnect_max = 3")
    elif case == "no capture":
        config = re.sub(r"\[capture\][^\[]*", "", config)
    elif case == "camera absent":
        (tmp_path / "cues").mkdir()
        (tmp_path / "cues" / "absent").touch()
    elif case == "no such device":
        config, fake_camera = config.replace("/dev/video-fake0", "/dev/video97"), False
    elif case == "bad bundle":
        (bundle_copy / "labels.npz").write_bytes(b"tampered")
    else:
        (tmp_path / "obs.db").mkdir()  # a directory where the database file should be
    agent = start(config, fake_camera=fake_camera)
    assert agent.wait(60) == code
    errors = [line for line in agent.lines if " ERROR " in line]
    assert len(errors) == 1, agent.lines
    assert re.search(f"cannot start: .*{message}.* exit_code={code}$", errors[0]), errors[0]
    assert "READY=1" not in agent.notifications(0.2)  # systemd sees a failed start


def test_sigterm_during_a_backoff_exits_at_once(start, tmp_path, tiny_bundle):
    config = config_text(tmp_path, tiny_bundle).replace(
        "reconnect_max_s = 0.8", "reconnect_max_s = 60"
    )
    config = config.replace("reconnect_initial_s = 0.2", "reconnect_initial_s = 60")
    agent = start(config)
    agent.wait_metric("retrofit_agent_frames_total", 3)
    agent.cue("absent")
    agent.wait_for_log(r"reopening camera .*in_s=")
    stopped_at = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - stopped_at < 10  # not the 30-60 s backoff
