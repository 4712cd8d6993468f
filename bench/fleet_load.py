"""Load on `retrofit-fleet serve` over loopback: cameras uploading, with faults, then a check.

    python bench/fleet_load.py [--seconds 40] [--rates 0,5000,5000-calm] [--connections 64]

Everything runs on this machine: a throw-away PostgreSQL cluster (fsync on, as in
production), `retrofit-fleet serve` with `--workers` processes, and this load generator.

1. Insert methods: the PostgreSQL store's binary COPY into a staging table + one
   `INSERT ... SELECT ... ON CONFLICT DO NOTHING`, against executemany of
   `INSERT ... ON CONFLICT DO NOTHING` (psycopg pipelines it), interleaved, 50-row batches.
2. Load: 1,000 device identities, each with its own token; requests of `--batch-rows`
   realistic rows (contract 3, 512-d float16 embeddings, six labels, gzip), built before the
   clock starts so the generator spends its CPU on sending, not on JSON; `--connections`
   keep-alive connections send them as fast as they are answered, bounded by `--seconds` and
   by the rows built. A request that fails is sent again (as a device would), so every row is
   eventually acknowledged or the run says it was not.
3. Faults (in every run but a `-calm` one), at a third and two thirds of the run: one ingest
   worker killed (SIGKILL), then PostgreSQL crashed and restarted (`pg_ctl stop -m
   immediate`, start). Throughout, 2% of the requests are forgeries: a device's token with
   rows claiming to be another device's next seqs, which that device later sends for real.
4. Verify: every acknowledged row is stored (0 missing), once (0 duplicates), no forged row is
   stored, and the real rows the forgeries claimed are stored as sent.

Reported: rows/s acknowledged (whole run and per 5 s), p50/p99 acknowledgement latency, PSS
of the server's and PostgreSQL's processes over time, CPU seconds of the server, PostgreSQL
and the generator, and rows per CPU-second of server + PostgreSQL ("rows/s per core", for
sizing a fleet). Results go to bench/results/fleet_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from retrofit_agent.fleet.localdb import LocalCluster
from retrofit_agent.fleet.postgres_store import PostgresStore
from retrofit_agent.fleet.store import StoredRow
from retrofit_agent.fleet.tokens import new_token, token_hash

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DIM = 512
DEVICES = 1000
FORGED_SHARE = 0.02
LABELS = [
    ("time_of_day", "day"),
    ("weather", "rain"),
    ("road_users", "car"),
    ("road_users", "truck"),
    ("road_users", "pedestrian"),
    ("scene", "highway"),
]
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- rows and requests


def row(device: str, seq: int, embedding: bytes, source: str = "/dev/video0") -> dict[str, Any]:
    labels = [{"group": g, "label": label, "score": 0.5 + 0.05 * i} for i, (g, label) in
              enumerate(LABELS)]  # fmt: skip
    return {
        "schema_version": 1,
        "device_id": device,
        "seq": seq,
        "captured_utc": datetime.now(UTC).isoformat(),
        "source": source,
        "frame_index": seq * 15,
        "model": {"name": "road", "manifest_sha256": "ab" * 32},
        "labels": labels,
        "top": {g: {"group": g, "label": label, "score": 0.8} for g, label in LABELS[:3]},
        "latency_ms": {"capture": 0.4, "preprocess": 3.1, "inference": 21.7},
        "embedding": base64.b64encode(embedding).decode(),
    }


class Request:
    """One prepared POST: its body, the token that sends it and the keys it carries."""

    __slots__ = ("body", "forged", "keys", "token")

    def __init__(self, token: str, rows: list[dict[str, Any]], forged: bool) -> None:
        envelope = {"protocol": 1, "batch_id": uuid.uuid4().hex, "rows": rows}
        self.body = gzip.compress(json.dumps(envelope, separators=(",", ":")).encode(), 6)
        self.token = token
        self.keys = [(r["device_id"], r["seq"]) for r in rows]
        self.forged = forged


def prepare(tokens: dict[str, str], total_rows: int, batch_rows: int, seed: int) -> list[Request]:
    """Requests for `total_rows` real rows over the devices in turn, plus forgeries."""
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((4096, DIM)).astype(np.float16)
    pool = [v.tobytes() for v in vectors]
    devices = list(tokens)
    next_seq = dict.fromkeys(devices, 1)
    requests: list[Request] = []
    made = 0
    while made < total_rows:
        device = devices[len(requests) % DEVICES]
        if rng.random() < FORGED_SHARE:  # another device's token, this device's future seqs
            forger = devices[(devices.index(device) + 1) % DEVICES]
            start = next_seq[device]  # the seqs of its next real request
            rows = [row(device, s, rng.choice(pool), "forged") for s in range(start, start + 5)]
            requests.append(Request(tokens[forger], rows, True))
            continue
        first = next_seq[device]
        rows = [row(device, s, rng.choice(pool)) for s in range(first, first + batch_rows)]
        next_seq[device] += batch_rows
        requests.append(Request(tokens[device], rows, False))
        made += batch_rows
    return requests


# ---------------------------------------------------------------- the client


class Load:
    """Sends the requests over keep-alive connections; re-sends what was not acknowledged."""

    def __init__(
        self, host: str, port: int, requests: list[Request], seconds: float, rate: float
    ) -> None:
        self.host, self.port = host, port
        self.rate = rate  # rows/s offered; 0: send as fast as answered
        self.offered = 0
        self.queue: deque[Request] = deque(requests)
        self.deadline = 0.0
        self.seconds = seconds
        self.acked: set[tuple[str, int]] = set()
        self.rejected_forged = 0
        self.latencies: list[float] = []
        self.ack_times: list[tuple[float, int]] = []  # (seconds since start, rows acknowledged)
        self.failures: dict[str, int] = {}
        self.started = 0.0

    async def run(self, connections: int) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        await asyncio.gather(*(self.connection() for _ in range(connections)))

    def fail(self, what: str, request: Request) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1
        self.queue.appendleft(request)  # a device sends it again

    async def connection(self) -> None:
        reader = writer = None
        while time.monotonic() < self.deadline and self.queue:
            request = self.queue.popleft()
            if self.rate:
                self.offered += len(request.keys)
                await asyncio.sleep(self.started + self.offered / self.rate - time.monotonic())
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                sent = time.monotonic()
                writer.write(
                    b"POST /v1/observations HTTP/1.1\r\nHost: bench\r\n"
                    b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                    + f"Authorization: Bearer {request.token}\r\n".encode()
                    + f"Content-Length: {len(request.body)}\r\n\r\n".encode()
                    + request.body
                )
                status, close, data = await asyncio.wait_for(read_response(reader), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                self.fail(type(exc).__name__, request)
                writer = close_writer(writer)
                await asyncio.sleep(0.2)
                continue
            if close:
                writer = close_writer(writer)
            if status != 200:
                self.fail(f"HTTP {status}", request)
                await asyncio.sleep(0.2 if status >= 500 else 0)
                continue
            ack = json.loads(data)
            now = time.monotonic()
            if request.forged:
                self.rejected_forged += len(ack["rejected"])
                if ack["accepted"]:
                    raise AssertionError(f"forged rows acknowledged: {ack['accepted']}")
                continue
            device = request.keys[0][0]
            self.acked.update((device, seq) for seq in ack["accepted"])
            self.latencies.append(now - sent)
            self.ack_times.append((now - self.started, len(ack["accepted"])))
        close_writer(writer)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers.get("connection", "").lower() == "close", body


def close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
    return None


# ---------------------------------------------------------------- processes


def tree(pid: int) -> list[int]:
    """`pid` and its living descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return found


def cpu_s(pid: int) -> float:
    """CPU seconds of `pid`'s tree, reaped children included."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def pss_mib(pid: int) -> float:
    """Proportional set size of `pid`'s tree: shared pages (PostgreSQL's shared buffers) are
    divided among the processes that map them instead of counted in each."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def postmaster_pid(cluster: LocalCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


# ---------------------------------------------------------------- phases


def compare_inserts(url: str, rounds: int, batch_rows: int) -> dict[str, Any]:
    """Median ms per 50-row batch: the store's COPY path vs executemany ON CONFLICT."""
    store = PostgresStore(url, pool_size=1)
    vectors = np.random.default_rng(1).standard_normal((batch_rows, DIM)).astype(np.float16)
    now = datetime.now(UTC)
    header = json.dumps({k: v for k, v in row("x", 1, b"").items() if k != "embedding"})
    times: dict[str, list[float]] = {"copy_staging": [], "executemany": []}
    sql = (
        "INSERT INTO observations (device_id, seq, captured_utc, batch_id, header, embedding) "
        "VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING"
    )
    seq = 0
    with psycopg.connect(url) as conn:
        for _ in range(rounds):
            for method in times:
                rows = [StoredRow(f"bench-{method}", seq + i, now, header, vectors[i].tobytes())
                        for i in range(batch_rows)]  # fmt: skip
                seq += batch_rows
                started = time.perf_counter()
                if method == "copy_staging":
                    store.store_rows("b", rows)
                else:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(sql, [(r.device_id, r.seq, r.captured_utc, "b", r.header,
                                               r.embedding) for r in rows])  # fmt: skip
                times[method].append((time.perf_counter() - started) * 1000)
        conn.execute("DELETE FROM observations WHERE device_id LIKE 'bench-%'")
        conn.commit()
    store.close()
    return {m: round(statistics.median(t), 3) for m, t in times.items()} | {"rounds": rounds}


def sample(pids: dict[str, int], stop: threading.Event, out: list[dict[str, float]]) -> None:
    started = time.monotonic()
    while not stop.wait(1.0):
        out.append({"t": round(time.monotonic() - started, 1)} |
                   {name: round(pss_mib(pid), 1) for name, pid in pids.items()})  # fmt: skip


def verify(url: str, load: Load, requests: list[Request]) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        stored = set(conn.execute("SELECT device_id, seq FROM observations").fetchall())
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, seq)) FROM observations"
        ).fetchone()
        forged = conn.execute(
            "SELECT count(*) FROM observations WHERE header->>'source' = 'forged'"
        ).fetchone()[0]
    claimed = {k for r in requests if r.forged for k in r.keys}
    return {
        "stored_rows": total,
        "acknowledged_rows": len(load.acked),
        "acknowledged_missing": len(load.acked - stored),
        "duplicates_stored": total - distinct,
        "forged_stored": forged,
        "forged_rows_built": sum(len(r.keys) for r in requests if r.forged),
        "forged_rows_rejected": load.rejected_forged,
        "claimed_keys_stored_for_real": len(claimed & stored),
        "claimed_keys_acknowledged": len(claimed & load.acked),
        "unsent_rows_left": sum(len(r.keys) for r in load.queue if not r.forged),
    }


def run(
    cluster: LocalCluster, args: argparse.Namespace, rate: float, faulty: bool, name: str
) -> dict[str, Any]:
    """One load run on a fresh database: `rate` rows/s offered (0: as fast as answered), with
    the faults or without."""
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url_of(name)
    store = PostgresStore(url, pool_size=1)
    tokens = {f"cam-{i:04d}": new_token() for i in range(DEVICES)}
    for device, token in tokens.items():
        store.add_device(device, token_hash(token))
    store.close()
    seconds = args.seconds
    total = int(rate * seconds * 1.1) if rate else args.rows
    built = time.monotonic()
    requests = prepare(tokens, total, args.batch_rows, seed=19)
    size = sum(len(r.body) for r in requests)
    print(f"{name}: built {len(requests)} requests ({size / 2**20:.0f} MiB gzip) in "
          f"{time.monotonic() - built:.1f} s", flush=True)  # fmt: skip
    serve = [sys.executable, "-m", "retrofit_agent.fleet", "serve", "--database", url,
             "--port", "0", "--workers", str(args.workers), "--embedding-dim", str(DIM),
             "--log-level", "WARNING"]  # fmt: skip
    server = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        host, port = server.stdout.readline().split()[-1].split("/")[2].split(":")
        time.sleep(2.0)  # workers up
        load = Load(host, int(port), requests, seconds, rate)
        pids = {"server_mib": server.pid, "postgres_mib": postmaster_pid(cluster)}
        cpu_before = {"server": cpu_s(server.pid), "postgres": cpu_s(pids["postgres_mib"])}
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        rss: list[dict[str, float]] = []
        stop = threading.Event()
        threading.Thread(target=sample, args=(pids, stop, rss), daemon=True).start()
        faults: list[dict[str, Any]] = []

        def inject() -> None:
            time.sleep(seconds / 3)
            victim = next(p for p in tree(server.pid) if b"spawn_main" in
                          Path(f"/proc/{p}/cmdline").read_bytes())  # fmt: skip
            os.kill(victim, signal.SIGKILL)
            at = round(time.monotonic() - load.started, 1)
            faults.append({"t": at, "fault": f"SIGKILL of ingest worker {victim}"})
            time.sleep(seconds / 3)
            old = cpu_s(pids["postgres_mib"])  # the crashed tree's CPU, before it is gone
            t = time.monotonic()
            cluster.restart()
            pids["postgres_mib"] = postmaster_pid(cluster)
            cpu_before["postgres"] -= old - cpu_s(pids["postgres_mib"])
            at = round(t - load.started, 1)
            took = round(time.monotonic() - t, 2)
            faults.append({"t": at, "fault": "PostgreSQL crashed and restarted", "took_s": took})

        injector = threading.Thread(target=inject, daemon=True)
        if faulty:
            injector.start()
        asyncio.run(load.run(args.connections))
        wall = time.monotonic() - load.started
        if faulty:
            injector.join(seconds)
        stop.set()
        cpu = {"server": cpu_s(server.pid) - cpu_before["server"],
               "postgres": cpu_s(pids["postgres_mib"]) - cpu_before["postgres"]}  # fmt: skip
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu["generator"] = own.ru_utime + own.ru_stime - own_before.ru_utime - own_before.ru_stime
        checks = verify(url, load, requests)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return summary(rate, load, wall, cpu, rss, faults, checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="per run (40)")
    rates = "rows/s offered per run; 0: as fast as answered, -calm: without the faults"
    parser.add_argument("--rates", default="0,5000,5000-calm", help=rates)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=50, help="rows per request (50)")
    parser.add_argument("--rows", type=int, default=600_000, help="rows built for rate 0")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "fleet_load")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    cluster = LocalCluster(workdir).start()
    try:
        inserts = {n: compare_inserts(cluster.url, 60, n) for n in (50, 500)}
        print(f"insert methods, median ms per batch: {inserts}", flush=True)
        runs = {}
        for i, spec in enumerate(args.rates.split(",")):
            rate, calm = float(spec.removesuffix("-calm")), spec.endswith("-calm")
            name = (f"{rate:g} rows/s" if rate else "max") + (", no faults" if calm else "")
            runs[name] = run(cluster, args, rate, not (calm or args.no_faults), f"load_{i}")
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "command": "python " + " ".join(["bench/fleet_load.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
        "settings": {
            "seconds": args.seconds,
            "connections": args.connections,
            "workers": args.workers,
            "batch_rows": args.batch_rows,
            "devices": DEVICES,
            "embedding_dim": DIM,
            "forged_share": FORGED_SHARE,
            "faults": not args.no_faults,
        },
        "insert_ms_per_batch": {str(k): v for k, v in inserts.items()},
        "runs": runs,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    bad = [c for r in runs.values() for c in ("acknowledged_missing", "duplicates_stored",
           "forged_stored") if r["checks"][c]]  # fmt: skip
    return 1 if bad else 0


def summary(rate, load, wall, cpu, rss, faults, checks) -> dict[str, Any]:
    rows = len(load.acked)
    per_5s: dict[int, int] = {}
    for t, n in load.ack_times:
        per_5s[int(t // 5) * 5] = per_5s.get(int(t // 5) * 5, 0) + n
    lat = sorted(load.latencies)
    return {
        "offered_rows_per_s": rate or "as fast as answered",
        "wall_s": round(wall, 2),
        "rows_acknowledged": rows,
        "rows_per_s": round(rows / wall),
        "rows_per_s_by_5s": {str(k): round(v / 5) for k, v in sorted(per_5s.items())},
        "ack_latency_ms": {
            "p50": round(1000 * lat[len(lat) // 2], 1),
            "p99": round(1000 * lat[int(len(lat) * 0.99)], 1),
        },
        "requests_acknowledged": len(lat),
        "failures_retried": load.failures,
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "rows_per_cpu_s_server_and_postgres": round(rows / (cpu["server"] + cpu["postgres"])),
        "faults": faults,
        "pss_mib": rss,
        "faulty": bool(faults),
        "checks": checks,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Fleet backend under load (retrofit-fleet serve on PostgreSQL, loopback)",
        "",
        f"Made by `{result['command']}` on {result['machine']}: PostgreSQL 15 (fsync on), "
        f"`retrofit-fleet serve` with {s['workers']} workers and the load generator, all on "
        f"this machine; {s['devices']} devices with their own tokens, {s['connections']} "
        f"keep-alive connections, {s['batch_rows']} rows a request ({s['embedding_dim']}-d "
        f"float16 embeddings, gzip), {100 * s['forged_share']:.0f}% forged requests; "
        f"{s['seconds']:g} s per run. Faults in each run but the calm one: an ingest worker "
        "SIGKILLed at a third, PostgreSQL crashed (`pg_ctl stop -m immediate`) and restarted at "
        "two thirds. Memory is PSS (shared pages divided among the processes mapping them).",
        "",
        "Insert methods, median ms per committed batch (`INSERT ... ON CONFLICT DO NOTHING`"
        " by executemany, against binary COPY into a staging table + one INSERT ... SELECT):",
        "",
        "| rows a batch | COPY + staging | executemany |",
        "| ---: | ---: | ---: |",
    ]
    for n, m in result["insert_ms_per_batch"].items():
        lines.append(f"| {n} | {m['copy_staging']} | {m['executemany']} |")
    lines += [
        "",
        "| offered | rows/s acknowledged | p50 / p99 ack ms | CPU s server / PostgreSQL / "
        "generator | rows per CPU-second (server + PostgreSQL) | server PSS MiB min / max | "
        "retried | missing / duplicates / forged stored |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, r in result["runs"].items():
        c, lat, cpu = r["checks"], r["ack_latency_ms"], r["cpu_s"]
        server_rss = [x["server_mib"] for x in r["pss_mib"]] or [0]
        retried = ", ".join(f"{k} {v}" for k, v in r["failures_retried"].items()) or "none"
        lines.append(
            f"| {name} | {r['rows_per_s']} | {lat['p50']} / {lat['p99']} | "
            f"{cpu['server']} / {cpu['postgres']} / {cpu['generator']} | "
            f"{r['rows_per_cpu_s_server_and_postgres']} | {min(server_rss)} / "
            f"{max(server_rss)} | {retried} | {c['acknowledged_missing']} / "
            f"{c['duplicates_stored']} / {c['forged_stored']} |"
        )
    lines.append("")
    for name, r in result["runs"].items():
        c = r["checks"]
        by5 = ", ".join(f"{v}" for v in r["rows_per_s_by_5s"].values())
        faults = "; ".join(f"{f['t']} s: {f['fault']}" for f in r["faults"]) or "none"
        every_5s = r["pss_mib"][4::5]
        rss = ", ".join(f"{x['server_mib']:.0f}" for x in every_5s)
        pg_rss = ", ".join(f"{x['postgres_mib']:.0f}" for x in every_5s)
        lines += [
            f"**{name}**: rows/s per 5 s: {by5}. Faults: {faults}. "
            f"{c['forged_rows_rejected']} forged rows sent and rejected (of "
            f"{c['forged_rows_built']} built); "
            f"{c['claimed_keys_stored_for_real']} keys they claimed later stored from their "
            f"real device. {c['unsent_rows_left']} rows left unsent when the time was up. "
            f"PSS every 5 s, MiB: server (all workers) {rss}; PostgreSQL {pg_rss}.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
