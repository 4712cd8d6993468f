import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from helpers.avi import with_repeats, write_avi
from helpers.cli import agent, error_line
from helpers.manifests import rewrite_manifest

from retrofit_agent.bundle.labels import save_label_bank
from retrofit_agent.bundle.manifest import load_bundle
from retrofit_agent.config import DEFAULT_MODEL


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "retrofit-agent"
    assert script.exists(), "pip install -e . should install the retrofit-agent script"
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("retrofit-agent ")


@pytest.mark.device
def test_dry_run_json_and_queue_stats(tiny_bundle, real_video, tmp_path):
    db = tmp_path / "obs.db"
    result = agent(
        "--dry-run",
        real_video,
        "--model",
        tiny_bundle,
        "--db",
        db,
        "--publish",
        f"ipc://{tmp_path}/pub.sock",
        "--json",
        check_ok=True,
    )
    summary = json.loads(result.stdout)
    assert summary["frames"] == 221
    assert summary["fps"] > 0 and summary["latency_ms"]["inference"]["p50"] > 0
    assert summary["model"]["name"] == "tiny-test"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT reasons, header FROM observations ORDER BY seq").fetchall()
        events = [json.loads(e) for (e,) in conn.execute("SELECT event FROM events")]
    # the summary says what the database holds: rows by reason, events by how they ended
    kept = summary["kept"]
    assert summary["stored_rows"] == kept["observations"] == len(rows) > 0
    by_reason = Counter(r for reasons, _ in rows for r in reasons.split(","))
    assert kept["by_reason"] == dict(by_reason) and "heartbeat" in by_reason
    assert [json.loads(h)["reasons"] for _, h in rows] == [r.split(",") for r, _ in rows]
    ended = Counter(e["end_reason"] for e in events)
    assert summary["events"]["started"] == len(events) and summary["events"]["ended"] == ended
    stats = json.loads(agent("queue", "stats", "--db", db, check_ok=True).stdout)
    assert stats["rows"] == stats["pending"] == len(rows)
    assert stats["kept_by_reason"] == kept["by_reason"]
    assert stats["events"]["pending"] == stats["events"]["events"] == len(events)
    assert stats["events"]["ended"] == ended
    exported = agent("queue", "export", "--db", db, check_ok=True).stdout.splitlines()
    assert len(exported) == len(rows) and json.loads(exported[0])["frame_index"] == 0


def test_dry_run_text_summary_with_the_default_bundle(synthetic_video):
    result = agent("--dry-run", synthetic_video, "--max-frames", 5, "--no-publish", check_ok=True)
    assert "frames   5 processed" in result.stdout
    assert re.search(r"^kept     \d+ observations: .*heartbeat 1", result.stdout, re.M)
    assert re.search(r"^events   \d+ started", result.stdout, re.M)
    assert "p50 ms" in result.stdout and "inference" in result.stdout
    assert f"model    {load_bundle(DEFAULT_MODEL).manifest.name} " in result.stdout


def test_a_random_weight_bundle_is_flagged(tiny_bundle, synthetic_video):
    result = agent(
        "--dry-run",
        synthetic_video,
        "--model",
        tiny_bundle,
        "--max-frames",
        2,
        "--no-publish",
        check_ok=True,
    )
    assert "random weights, its labels are meaningless" in result.stderr


@pytest.mark.device
def test_missing_video(tiny_bundle, tmp_path):
    db = tmp_path / "obs.db"
    result = agent("--dry-run", tmp_path / "absent.mp4", "--model", tiny_bundle, "--db", db)
    assert result.returncode == 66
    assert "absent.mp4: no such file or directory" in error_line(result)
    assert not db.exists()


@pytest.mark.device
def test_not_a_video(tiny_bundle, not_a_video, tmp_path):
    db = tmp_path / "obs.db"
    result = agent("--dry-run", not_a_video, "--model", tiny_bundle, "--db", db)
    assert result.returncode == 66
    assert "notes.mp4: not a readable video" in error_line(result)
    assert not db.exists()


@pytest.mark.device
def test_truncated_video_keeps_only_whole_rows(tiny_bundle, truncated_video, tmp_path):
    db = tmp_path / "obs.db"
    result = agent(
        "--dry-run", truncated_video, "--model", tiny_bundle, "--db", db, "--no-publish",
        every_frame=True,
    )  # fmt: skip
    assert result.returncode == 66
    decoded = re.search(r"truncated\.avi: video ends after (\d+) of 40 frames", error_line(result))
    assert decoded and 0 < int(decoded[1]) < 40
    with sqlite3.connect(db) as conn:  # the frames decoded before the cut, each row complete
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT header, length(embedding) FROM observations").fetchall()
    assert [json.loads(h)["frame_index"] for h, _ in rows] == list(range(int(decoded[1])))
    assert {size for _, size in rows} == {32 * 2}
    # the summary of the frames it did process, before the error
    assert f"frames   {decoded[1]} processed" in result.stdout
    assert f"database {db}: {decoded[1]} rows" in result.stdout


@pytest.mark.device
def test_a_complete_video_with_zero_length_repeat_entries_is_not_truncated(tiny_bundle, tmp_path):
    """Was exit 66, "video ends after 74 of 444 frames": the container counts the zero-length
    "repeat previous frame" entries, the decoder delivers the real frames."""
    video = write_avi(tmp_path / "repeats.avi", with_repeats(444, every=6))
    result = agent("--dry-run", video, "--model", tiny_bundle, "--no-publish", check_ok=True)
    assert "frames   74 processed" in result.stdout


@pytest.mark.device
def test_bundle_with_wrong_hash(bundle_copy, synthetic_video, tmp_path):
    (bundle_copy / "labels.npz").write_bytes(b"tampered")
    db = tmp_path / "obs.db"
    result = agent("--dry-run", synthetic_video, "--model", bundle_copy, "--db", db)
    assert result.returncode == 65
    assert "labels.npz: sha256" in error_line(result) and "does not match" in result.stderr
    assert not db.exists()


@pytest.mark.device
def test_label_bank_of_wrong_dimension(bundle_copy, synthetic_video, tmp_path):
    save_label_bank(
        bundle_copy / "labels.npz", ["a"], ["g"], np.eye(1, 48), [0.0], {"g": "exclusive"}
    )
    rewrite_manifest(bundle_copy)
    db = tmp_path / "obs.db"
    result = agent("--dry-run", synthetic_video, "--model", bundle_copy, "--db", db)
    assert result.returncode == 65
    assert "label embeddings have dimension 48, but student.int8.onnx outputs 32" in error_line(
        result
    )
    assert not db.exists()


@pytest.mark.device
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[store]\nmax_rowz = 10\n", "store.max_rowz: unknown key"),
        ("[store]\nmax_rows = 'ten'\n", "store.max_rows: Input should be a valid integer"),
        ("[publish]\nenabled = 3\n", "publish.enabled: Input should be a valid boolean"),
    ],
)
def test_bad_config(tiny_bundle, synthetic_video, tmp_path, config, expected):
    path = tmp_path / "agent.toml"
    path.write_text(config)
    db = tmp_path / "obs.db"
    result = agent(
        "--dry-run", synthetic_video, "--model", tiny_bundle, "--config", path, "--db", db
    )
    assert result.returncode == 78
    line = error_line(result)
    assert str(path) in line and expected in line
    assert not db.exists()


@pytest.mark.device
def test_queue_stats_on_missing_database(tmp_path):
    result = agent("queue", "stats", "--db", tmp_path / "absent.db")
    assert result.returncode == 74
    assert "no such observation database" in error_line(result)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.device
def test_usage_errors():
    assert agent("--dry-run", "x.mp4", "--max-frames", "0").returncode == 2


@pytest.mark.device
def test_no_arguments_print_one_usage_line():
    """Was the whole --help, 30 lines, on stderr."""
    result = agent()
    assert result.returncode == 2 and not result.stdout
    assert re.fullmatch(
        r"usage: retrofit-agent \{--dry-run VIDEO \| queue .*--help.*\n", result.stderr
    )


@pytest.mark.device
@pytest.mark.parametrize("what", ["video", "config"])
def test_a_fifo_as_input_is_refused_not_waited_on(tiny_bundle, synthetic_video, tmp_path, what):
    """A FIFO as the video (or the config) blocked the dry run forever."""
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    video, config, code = (fifo, None, 66) if what == "video" else (synthetic_video, fifo, 78)
    args = ["--dry-run", video, "--model", tiny_bundle, "--no-publish"]
    result = agent(*args, *(["--config", config] if config else []), timeout=30)
    assert result.returncode == code
    assert f"{fifo}: " in error_line(result) and "named pipe (FIFO)" in error_line(result)


def test_the_summary_shows_frames_without_a_label_and_what_total_is(real_video):
    """The default bundle's `object` group is exclusive with a threshold: 31 of the road
    clip's 221 frames have no object label, which the summary did not show (190 of 221)."""
    result = agent("--dry-run", real_video, "--no-publish", check_ok=True)
    counts = {
        m[1]: int(m[2])
        for m in re.finditer(r"^(\S+/\S+(?: label\))?) +(\d+) +\d+$", result.stdout, re.M)
    }
    for group in ("object", "colour", "shape"):  # exclusive: one label or none per frame
        assert sum(n for k, n in counts.items() if k.startswith(group + "/")) == 221, counts
    assert counts["object/(no label)"] > 0
    assert re.search(r"^total \(excl\. capture\) +[\d.]+ +[\d.]+$", result.stdout, re.M)


@pytest.mark.device
def test_queue_vacuum_reports_the_real_change_of_the_file(tiny_bundle, real_video, tmp_path):
    """It reported 323584 -> 550216 bytes for a file that shrank to 225280: VACUUM writes the
    new file through the WAL, which was counted."""
    db = tmp_path / "obs.db"
    agent(
        "--dry-run", real_video, "--model", tiny_bundle, "--db", db, "--no-publish",
        check_ok=True, every_frame=True,
    )  # fmt: skip
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM observations WHERE seq % 3 = 0")
    before = sum(f.stat().st_size for f in tmp_path.glob("obs.db*"))
    result = agent("queue", "vacuum", "--db", db, check_ok=True)
    reported = re.fullmatch(rf"vacuumed {db}: (\d+) -> (\d+) bytes\n", result.stdout)
    assert reported and int(reported[1]) == before
    after = sum(f.stat().st_size for f in tmp_path.glob("obs.db*"))
    assert int(reported[2]) == after < before


@pytest.mark.device
def test_degenerate_frames_are_skipped_and_the_queue_exports(synthetic_video, tmp_path):
    pytest.importorskip("onnx", reason="builds a bundle (onnx: not on the camera)")
    from helpers.bundle_factory import build_bundle

    dead = build_bundle(tmp_path / "dead", dead_on_bright=True)
    db = tmp_path / "obs.db"
    result = agent(
        "--dry-run", synthetic_video, "--model", dead, "--db", db, "--no-publish", every_frame=True
    )
    assert result.returncode == 0, result.stderr
    summary = re.search(
        r"frames +(\d+) processed, 0 dropped, (\d+) skipped \(degenerate", result.stdout
    )
    assert summary and int(summary[1]) + int(summary[2]) == 40 and int(summary[2]) > 0
    exported = agent("queue", "export", "--db", db, check_ok=True).stdout.splitlines()
    assert len(exported) == int(summary[1])
    assert all(json.loads(line)["top"] for line in exported)
