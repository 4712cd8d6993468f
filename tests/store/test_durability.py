"""The queue under crashes: kill -9 of the running service at random moments, and power cuts.

A power cut is simulated after a kill by damaging what an unsynced disk could lose: the WAL
beyond its last commit frame (truncated, zeroed or overwritten with garbage) and the -shm
index (deleted). With synchronous=FULL everything up to the last commit frame was fsynced
before the commit returned, and a row counts as acknowledged only once its batch's
`committed` line was logged, which is after the commit returned.
"""

import random
import re
import sqlite3
import struct
import time
from contextlib import closing
from pathlib import Path

import pytest
from helpers.agent_process import AgentProcess, config_text

WAL_HEADER, FRAME_HEADER = 32, 24
COMMITTED = re.compile(r"committed rows=(\d+) first_seq=(\d+) last_seq=(\d+)")


def committed_wal(wal: Path) -> tuple[int, int, set[int]]:
    """Page size, the offset past the last commit frame of the WAL's current generation (its
    salts match the header's) and the pages those committed frames hold."""
    data = wal.read_bytes()
    if len(data) < WAL_HEADER:
        return 0, 0, set()
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    end, offset, pages, in_transaction = WAL_HEADER, WAL_HEADER, set(), set()
    while offset + FRAME_HEADER + page_size <= len(data):
        header = data[offset : offset + FRAME_HEADER]
        if header[8:16] != salts:
            break
        offset += FRAME_HEADER + page_size
        in_transaction.add(struct.unpack(">I", header[:4])[0])
        if struct.unpack(">I", header[4:8])[0]:  # database size after commit: a commit frame
            end, pages = offset, pages | in_transaction
            in_transaction = set()
    return page_size, end, pages


def power_cut(db: Path, rng: random.Random) -> str:
    """Lose or tear what was not yet synced when the power went, then restart clean:
    - the WAL beyond its last commit frame (an unfinished transaction): truncated, zeroed
      or garbage;
    - database pages a checkpoint was copying from the WAL: torn (random bytes) — the WAL
      still holds them, since it is only reset after the database file is synced;
    - the -shm index, rebuilt from the WAL on the next open.
    """
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    wal = db.with_name(db.name + "-wal")
    if not wal.exists():
        return "no WAL"
    page_size, end, pages = committed_wal(wal)
    size = wal.stat().st_size
    cut = rng.randrange(end, size + 1) if size > end else size
    how = rng.choice(["truncate", "zero", "garbage"])
    with open(wal, "r+b") as f:
        if how == "truncate":
            f.truncate(cut)
        else:
            f.seek(cut)
            f.write(bytes(size - cut) if how == "zero" else rng.randbytes(size - cut))
    torn = [p for p in sorted(pages) if p * page_size <= db.stat().st_size and rng.random() < 0.5]
    with open(db, "r+b") as f:
        for page in torn:
            f.seek((page - 1) * page_size)
            f.write(rng.randbytes(page_size))
    return f"WAL tail {how} ({size - cut} B), {len(torn)} db pages torn"


def max_seq(db: Path) -> int:
    # closed at once: a connection left open here would keep the -shm of before a power cut
    # mapped, and SQLite shares that mapping with every later connection of this process
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM observations").fetchone()[0]


@pytest.mark.parametrize("runs", [6, pytest.param(50, marks=pytest.mark.slow)])
def test_kill_9_and_power_cuts_lose_no_acknowledged_row(tmp_path, tiny_bundle, runs):
    rng = random.Random(runs)
    config = config_text(tmp_path, tiny_bundle)
    db = tmp_path / "obs.db"
    acknowledged: list[tuple[int, int, int]] = []  # rows, first seq, last seq of each batch
    cuts, started = [], time.monotonic()
    for run in range(runs):
        before = max_seq(db)
        agent = AgentProcess(tmp_path, config, fps=200)  # as many writes as the CPU allows
        time.sleep(rng.uniform(0.3, 3.0))  # from start-up to hundreds of rows in
        agent.proc.kill()
        assert agent.wait() == -9, "\n".join(agent.lines)  # it was running, not crashed
        agent.close()
        batches = [
            tuple(map(int, m.groups())) for line in agent.lines if (m := COMMITTED.search(line))
        ]
        for rows, first, last in batches:
            # no seq of an earlier run reused; label events take seqs too: gaps inside a batch
            assert last - first + 1 >= rows and first > before
            acknowledged.append((rows, first, last))
        if run % 3 == 2:
            cuts.append(power_cut(db, rng))

    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT seq, captured_utc FROM observations ORDER BY seq").fetchall()
    seqs = [seq for seq, _ in rows]
    for count, first, last in acknowledged:  # every acknowledged row survived
        assert sum(first <= seq <= last for seq in seqs) == count, (count, first, last)
    assert sum(count for count, _, _ in acknowledged) > runs * 10
    assert [t for _, t in rows] == sorted(t for _, t in rows)  # later frames, higher seqs
    gaps = seqs[-1] - seqs[0] + 1 - len(seqs)
    print(
        f"\nkill -9 x{runs} ({len(cuts)} with a power cut) in {time.monotonic() - started:.0f} s: "
        f"{len(seqs)} rows stored, {sum(c for c, _, _ in acknowledged)} acknowledged, all present; "
        f"seq {seqs[0]}..{seqs[-1]}, {gaps} numbers skipped (reserved blocks lost in crashes); "
        f"power cuts: {cuts}"
    )
