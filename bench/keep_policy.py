"""What the keep policy keeps, what it loses, and what it costs (issue 17).

Everything runs the agent's own assembly (frames.runtime.Runtime, as the dry run and the
service do) with the default bundle and the default `[keep]` section, and collects what it
publishes on ZeroMQ (every frame) next to what it stores (the kept frames and the events):

1. models/demo.mp4 (8 scenes of 2 s at 10 FPS): every scene change a kept `change` row (recall),
   spurious changes per scene, one event per scene and label (the labels carried by at least
   half of a scene's frames), and a sweep of `min_frames` x `end_frames` replayed through the
   policy on the same published frames (what the defaults were chosen from).
2. The real road clip (solidWhiteRight.mp4, 221 frames at 25 FPS, read as fast as possible on
   its own timeline) with the policy and with `every_frame`: rows kept per frame, and the
   request bytes of uploading them (the real uploader against the fleet app on SQLite, gzip
   batches as sent, with and without embeddings).
3. A 10-minute loop of the same clip played as a live camera at 15 FPS (re-encoded at 15 FPS,
   realtime, looping: the policy runs on capture time): the same, every_frame's rows and bytes
   being those of all the frames this very run published. A loop repeats the clip's frames
   exactly, so the kept rows of successive passes are byte-identical and gzip squeezes them far
   below what a real drive's would cost: the loop's policy bytes are therefore its rows and
   events times the bytes per stored item of the clip run (where nothing repeats), and the
   bytes as uploaded are reported beside them.
   Both are projected to a 10-hour driving day at 15 FPS (540,000 frames).
4. The policy's own cost per frame on the inference thread: `KeepPolicy.decide` over the clip's
   published frames with 10 kept embeddings in memory (warm, as a micro-benchmark), and the
   runtime's `keep` stage during the live loop (in situ, p50/p90).
5. Near-duplicates: a parked car as the road clip's first frame with sensor noise and JPEG
   re-encoding, 100 times: the cosine distances the novelty floor (`radius_min`) must exceed.
6. Peak RSS of the dry run (/usr/bin/time -f %M) with this tree and with `--baseline`, a
   commit before the policy (exported with git archive into bench/.work), alternating, 3 runs
   each, same Python and packages.

    python bench/keep_policy.py [--loop-s 600] [--baseline COMMIT] [--out bench/results]

Needs the [fleet] extra (the fleet app that the uploads go to) and ../shared/data
(RETROFIT_SHARED elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from retrofit_agent.config import (
    DEFAULT_MODEL,
    AgentConfig,
    CaptureConfig,
    UploadConfig,
    load_config,
)
from retrofit_agent.event import Event
from retrofit_agent.fleet.app import create_app
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.sqlite_store import SqliteStore
from retrofit_agent.fleet.tokens import token_hash
from retrofit_agent.frames.runtime import Runtime
from retrofit_agent.frames.stats import quantiles
from retrofit_agent.keep.config import KeepConfig
from retrofit_agent.keep.policy import KeepPolicy
from retrofit_agent.observation import ModelRef, Observation
from retrofit_agent.store.queue import Store
from retrofit_agent.transport.upload import Uploader

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "models" / "demo.mp4"
SHARED = Path(os.environ.get("RETROFIT_SHARED", REPO.parent / "shared"))
ROAD = SHARED / "data" / "video" / "solidWhiteRight.mp4"
WORK = REPO / "bench" / ".work"
DEMO_SCENES, DEMO_SCENE_FRAMES = 8, 20  # retrofit_agent.distill.synthetic.write_demo_clip
DAY_FRAMES = 10 * 3600 * 15  # a 10-hour driving day at 15 FPS
DEVICE, TOKEN = "bench-cam", "bench-token-0123456789abcdef"


@dataclass
class Run:
    """What one Runtime.run published and stored."""

    frames: int
    published: list[Observation]  # every frame, as published (reasons: those it was kept for)
    published_events: list[tuple[str, Event]]  # ("start" | "end", event)
    stored: list[Observation]
    events: list[Event]
    db: Path
    keep_ms: list[float] = field(default_factory=list)  # the runtime's keep stage, per frame
    wall_s: float = 0.0
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # p50/p90 per stage
    decide_cpu_ms: list[float] = field(default_factory=list)  # thread CPU time of each decide


def agent_config(db: Path, endpoint: str, **keep: Any) -> AgentConfig:
    return load_config(
        None,
        environ={},
        overrides={
            "device_id": DEVICE,
            "model": DEFAULT_MODEL,
            "store.path": db,
            "publish.endpoint": endpoint,
            "publish.send_hwm": 1_000_000,
            **{f"keep.{k}": v for k, v in keep.items()},
        },
    )


class Collector:
    """A SUB socket on its own thread, keeping every message the agent publishes."""

    def __init__(self, endpoint: str) -> None:
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.connect(endpoint)
        for topic in (b"obs", b"event."):
            self.socket.subscribe(topic)
        self.messages: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def wait_until_subscribed(self, runtime: Runtime) -> None:
        """PUB drops messages until the subscription arrives: probe (seq 0) until one lands."""
        assert runtime.publisher is not None
        probe = Observation(
            device_id=DEVICE,
            seq=0,
            captured_utc=datetime.now(UTC),
            source="probe",
            frame_index=0,
            model=ModelRef(name="probe", manifest_sha256="0" * 64),
            labels=[],
            top={},
            latency_ms={},
            embedding=b"",
        )
        for _ in range(200):
            runtime.publisher.publish(probe, probe.header_json())
            if self.socket.poll(50):
                break
        else:
            raise RuntimeError("the collector never saw the agent's socket")
        while self.socket.poll(100):
            self.socket.recv_multipart()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.socket.poll(100):
                self.messages.append(self.socket.recv_multipart())

    def close(self) -> tuple[list[Observation], list[tuple[str, Event]]]:
        time.sleep(0.5)  # the last messages
        self._stop.set()
        self._thread.join()
        self.socket.close()
        observations, events = [], []
        for message in self.messages:
            if message[0] == b"obs" and message[1].startswith(b'{"schema_version":2'):
                header, embedding = message[1], message[2]
                observations.append(
                    Observation.model_validate({**json.loads(header), "embedding": embedding})
                )
            else:
                kind = message[0].decode().split(".")[1]
                events.append((kind, Event.model_validate_json(message[1])))
        return observations, events


def run(
    work: Path,
    name: str,
    capture: CaptureConfig,
    max_frames: int | None = None,
    cpu_of_decide: bool = False,
    **keep: Any,
) -> Run:
    """One Runtime.run into `work`/`name`.db; `cpu_of_decide` also takes the thread CPU time
    of each decision (two clock reads a frame more in the `keep` stage)."""
    db = work / f"{name}.db"
    endpoint = f"ipc://{work}/{name}.sock"
    config = agent_config(db, endpoint, **keep)
    cpu: list[float] = []
    with Runtime(config, capture) as runtime:
        if cpu_of_decide:
            decide = runtime.policy.decide

            def timed(observation: Observation, t: float) -> Any:
                start = time.thread_time()
                decision = decide(observation, t)
                cpu.append((time.thread_time() - start) * 1e3)
                return decision

            runtime.policy.decide = timed  # type: ignore[method-assign]
        collector = Collector(endpoint)
        collector.wait_until_subscribed(runtime)
        started = time.perf_counter()
        stats = runtime.run(max_frames)
        wall = time.perf_counter() - started
        published, published_events = collector.close()
        stored = list(runtime.store.observations())
        events = runtime.store.events.events()
        keep_ms = runtime.stats.latency_ms["keep"].values().tolist()
    stages = stats.summary()["latency_ms"]
    return Run(
        stats.frames, published, published_events, stored, events, db, keep_ms, wall, stages, cpu
    )


# --- 1. the demo clip: scene changes and events --------------------------------------------


def scene_of(frame_index: int) -> int:
    return frame_index // DEMO_SCENE_FRAMES


def demo_report(published: list[Observation], stored: list[Observation], events: list[Event]):
    """Recall of scene changes by kept `change` rows, spurious changes, events per scene."""
    changes = [o.frame_index for o in stored if "change" in o.reasons]
    per_scene = Counter(scene_of(i) for i in changes)
    detected = [s for s in range(DEMO_SCENES) if per_scene[s]]
    spurious = {s: max(0, per_scene[s] - 1) for s in range(DEMO_SCENES)}
    frame_of = {o.seq: o.frame_index for o in published}
    carried: dict[int, Counter[tuple[str, str]]] = {s: Counter() for s in range(DEMO_SCENES)}
    for o in published:
        carried[scene_of(o.frame_index)].update((s.group, s.label) for s in o.labels)
    pairs = {}
    for scene in range(DEMO_SCENES):
        lo, hi = scene * DEMO_SCENE_FRAMES, (scene + 1) * DEMO_SCENE_FRAMES - 1
        for label, n in carried[scene].items():
            if n >= DEMO_SCENE_FRAMES / 2:  # the scene's labels: on at least half its frames
                overlapping = [
                    e
                    for e in events
                    if (e.group, e.label) == label
                    and frame_of[e.start_seq] <= hi
                    and frame_of[e.end_seq] >= lo
                ]
                pairs[f"{scene}:{label[0]}/{label[1]}"] = len(overlapping)
    return {
        "frames": len(published),
        "scenes": DEMO_SCENES,
        "change_rows": len(changes),
        "change_frames": changes,
        "scenes_detected": len(detected),
        "recall": len(detected) / DEMO_SCENES,
        "spurious_per_scene": spurious,
        "max_spurious_in_a_scene": max(spurious.values()),
        "scene_label_pairs": len(pairs),
        "pairs_with_one_event": sum(n == 1 for n in pairs.values()),
        "pairs_without_event": sorted(k for k, n in pairs.items() if n == 0),
        "pairs_with_several_events": sorted(k for k, n in pairs.items() if n > 1),
        "events": len(events),
    }


def replay(published: list[Observation], fps: float, **keep: Any) -> tuple[list, list[Event]]:
    """The policy over frames already published (their own labels and embeddings), on the
    file's timeline: the stored rows and events it would make."""
    policy = KeepPolicy(KeepConfig.model_validate(keep), itertools.count(10**9).__next__)
    stored, events = [], []
    for o in published:
        decision = policy.decide(o, o.frame_index / fps)
        if decision.reasons:
            stored.append(o.model_copy(update={"reasons": list(decision.reasons)}))
        stored += decision.best_frames
        events += decision.ended
    closed = policy.close()
    return stored + closed.best_frames, events + closed.ended


def demo_sweep(published: list[Observation]) -> list[dict[str, Any]]:
    rows = []
    for min_frames in (3, 4, 5, 6, 8):
        for end_frames in (min_frames, 10, 20):
            stored, events = replay(published, 10.0, min_frames=min_frames, end_frames=end_frames)
            report = demo_report(published, stored, events)
            rows.append(
                {
                    "min_frames": min_frames,
                    "end_frames": end_frames,
                    **{
                        k: report[k]
                        for k in (
                            "recall",
                            "max_spurious_in_a_scene",
                            "change_rows",
                            "pairs_with_one_event",
                            "scene_label_pairs",
                            "events",
                        )
                    },
                    "pairs_without_event": len(report["pairs_without_event"]),
                    "pairs_with_several_events": len(report["pairs_with_several_events"]),
                }
            )
    return rows


def road_sweep(published: list[Observation], fps: float) -> list[dict[str, Any]]:
    """Rows and events a frame on the road clip's published frames under other hysteresis."""
    rows = []
    for min_frames in (3, 5, 8):
        for end_frames in (5, 10, 20):
            stored, events = replay(published, fps, min_frames=min_frames, end_frames=end_frames)
            kept = Counter(r for o in stored for r in o.reasons)
            rows.append(
                {
                    "min_frames": min_frames,
                    "end_frames": end_frames,
                    "rows_per_frame": len(stored) / len(published),
                    "events": len(events),
                    "kept_by_reason": dict(kept),
                }
            )
    return rows


# --- 2, 3. rows and bytes against every_frame -------------------------------------------


@contextlib.contextmanager
def fleet(work: Path) -> Iterator[str]:
    """The fleet app on a fresh SQLite store, served in this process; yields its URL."""
    from uvicorn import Config, Server

    store = SqliteStore(work / f"fleet-{time.monotonic_ns()}.db")
    store.add_device(DEVICE, token_hash(TOKEN))
    limits = Limits(embedding_dim=128, max_age_days=36_500)
    config = Config(create_app(store, limits), host="127.0.0.1", log_config=None, access_log=False)
    server = Server(config)
    sock = config.bind_socket()
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/observations"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


def upload(work: Path, db: Path, embeddings: bool) -> dict[str, int]:
    """Upload a copy of the (closed) queue `db` with the real uploader, default batches: what
    it sent."""
    copy = Path(shutil.copy(db, work / f"upload-{time.monotonic_ns()}.db"))
    token = work / "token"
    token.write_text(TOKEN)
    with fleet(work) as url, contextlib.closing(Store(copy)) as queue:
        config = UploadConfig(endpoint=url, token_file=token, include_embeddings=embeddings)
        uploader = Uploader(config, queue)
        stats = uploader.drain(once=True)
        uploader.close()
    assert stats.stopped == "empty", stats
    return {
        "requests": stats.requests,
        "rows": stats.uploaded,
        "events": stats.events_uploaded,
        "bytes": stats.sent_bytes,
    }


def every_frame_queue(work: Path, published: list[Observation]) -> Path:
    """A queue holding every frame the run published, as `every_frame` would have stored."""
    db = work / f"every-frame-{time.monotonic_ns()}.db"
    with contextlib.closing(Store(db, commit_every=1000)) as store:
        for o in published:
            kept = o.model_copy(update={"reasons": ["every_frame"]})  # as it would be stored
            store.add(kept, kept.header_json())
    return db


def compare(
    work: Path,
    policy: Run,
    every_frame_db: Path,
    frames: int,
    item_bytes: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Rows and upload bytes per frame of the policy's queue against every_frame's, and a
    10-hour day at 15 FPS projected from them. With `item_bytes` (bytes per stored row or
    event, by kind), the policy's bytes are its items times those, not as uploaded."""
    result: dict[str, Any] = {"frames": frames, "kept_by_reason": {}, "events": len(policy.events)}
    for o in policy.stored:
        for reason in o.reasons:
            result["kept_by_reason"][reason] = result["kept_by_reason"].get(reason, 0) + 1
    result["rows"] = {"policy": len(policy.stored), "every_frame": frames}
    for embeddings in (True, False):
        kind = "with_embeddings" if embeddings else "without_embeddings"
        kept, every = upload(work, policy.db, embeddings), upload(work, every_frame_db, embeddings)
        assert every["rows"] == frames and kept["rows"] == len(policy.stored), (kept, every)
        items = kept["rows"] + kept["events"]
        result[kind] = {"policy": kept, "every_frame": every, "item_bytes": kept["bytes"] / items}
        if item_bytes is not None:
            result[kind]["policy"] = {**kept, "uploaded_bytes": kept["bytes"]}
            result[kind]["policy"]["bytes"] = round(items * item_bytes[kind])
    per_frame = {
        "rows": {k: v / frames for k, v in result["rows"].items()},
        **{
            kind: {k: result[kind][k]["bytes"] / frames for k in ("policy", "every_frame")}
            for kind in ("with_embeddings", "without_embeddings")
        },
    }
    result["per_frame"] = per_frame
    result["day_at_15fps"] = {
        what: {k: v * DAY_FRAMES for k, v in values.items()} for what, values in per_frame.items()
    }
    result["fewer"] = {
        what: values["every_frame"] / values["policy"] for what, values in per_frame.items()
    }
    return result


def reencode(video: Path, fps: float, out: Path) -> Path:
    """The clip's frames, every one, in a file that plays at `fps` (MJPEG, quality 95)."""
    if out.is_file():
        return out
    source = cv2.VideoCapture(str(video))
    ok, image = source.read()
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    while ok:
        writer.write(image)
        ok, image = source.read()
    writer.release()
    source.release()
    return out


def novelty_rate(run: Run) -> dict[str, float]:
    hours = run.wall_s / 3600
    novel = sum("novel" in o.reasons for o in run.stored)
    return {"novel": novel, "hours": hours, "novel_per_hour": novel / hours if hours else 0.0}


# --- 4. cost -----------------------------------------------------------------------------


def decide_cost(published: list[Observation], frames: int = 20_000) -> dict[str, Any]:
    """KeepPolicy.decide per frame, warm, 10 kept embeddings in memory (the default)."""
    policy = KeepPolicy(KeepConfig(), itertools.count(10**9).__next__)
    loop = itertools.cycle(published)
    t = 0.0
    while policy.novelty is not None and policy.novelty._count < 10:  # fill the memory
        t += 1 / 15
        policy.decide(next(loop), t)
    batches = []
    for _ in range(frames // 1000):
        chunk = [next(loop) for _ in range(1000)]
        start = time.perf_counter()
        for o in chunk:
            t += 1 / 15
            policy.decide(o, t)
        batches.append((time.perf_counter() - start) / len(chunk) * 1e3)
    return {
        "frames": frames,
        "kept_embeddings": min(policy.novelty._count, 10) if policy.novelty else 0,
        "ms_per_frame_median": statistics.median(batches),
        "ms_per_frame_batches": batches,
    }


def stage(samples: list[float]) -> dict[str, float]:
    p50, p90, p99 = quantiles(np.asarray(samples), (0.5, 0.9, 0.99))
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "frames": len(samples)}


# --- 5. near-duplicates ------------------------------------------------------------------


def parked_car_distances(work: Path, road: Run) -> dict[str, Any]:
    """The road clip's first frame, 100 times with sensor noise (sigma 2 of 255) and JPEG q=90
    re-encoding, through the pipeline: cosine distances to the first copy; and those of
    consecutive frames of the drive (`road`), for comparison."""
    source = cv2.VideoCapture(str(ROAD))
    image = source.read()[1]
    source.release()
    rng = np.random.default_rng(0)
    folder = work / "parked"
    folder.mkdir(exist_ok=True)
    for i in range(100):
        noisy = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
    parked = run(work, "parked", CaptureConfig(source=str(folder)), every_frame=True)
    embeddings = np.stack([o.embedding_array().astype(np.float32) for o in parked.published])
    distances = 1 - embeddings[1:] @ embeddings[0]
    moving = np.stack([o.embedding_array().astype(np.float32) for o in road.published])
    consecutive = 1 - np.sum(moving[1:] * moving[:-1], axis=1)
    p50, p99, top = quantiles(distances, (0.5, 0.99, 1.0))
    m50, m99 = quantiles(consecutive, (0.5, 0.99))
    return {
        "parked": {"p50": float(p50), "p99": float(p99), "max": float(top)},
        "driving_consecutive_frames": {"p50": float(m50), "p99": float(m99)},
    }


# --- 6. peak RSS ---------------------------------------------------------------------------


def peak_rss_mib(tree: Path, video: Path) -> float:
    """The dry run's peak RSS with the code of `tree` (its own retrofit_agent, this Python), as
    /usr/bin/time -f %M reports it: time forks from itself, so the child's peak is the dry
    run's own (a fork of this process would start with this process's pages)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "/usr/bin/time", "-f", "%M", sys.executable, "-m", "retrofit_agent", "--dry-run",
            str(video), "--publish", f"ipc://{tmp}/rss.sock",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run(
            command, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: dry run of {video} exited {done.returncode}")
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def rss(baseline: Path, runs: int = 3) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for video in (DEMO, ROAD):
        samples: dict[str, list[float]] = {"baseline": [], "this_tree": []}
        for _ in range(runs):  # alternating, so drift hits both alike
            samples["baseline"].append(peak_rss_mib(baseline, video))
            samples["this_tree"].append(peak_rss_mib(REPO, video))
        medians = {k: statistics.median(v) for k, v in samples.items()}
        result[video.name] = {
            "samples_mib": samples,
            "median_mib": medians,
            "difference_mib": medians["this_tree"] - medians["baseline"],
        }
    return result


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def export(commit: str) -> Path:
    """The tree of `commit` (git archive) under bench/.work, to run its dry run."""
    tree = WORK / f"baseline-{commit}"
    if not tree.is_dir():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


# --- report -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-s", type=float, default=600.0, help="the live loop (600 s)")
    parser.add_argument("--baseline", help="a commit before the policy, for the peak RSS")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {
        "command": " ".join(["python", "bench/keep_policy.py", *sys.argv[1:]]),
        "commit": git("rev-parse", "--short", "HEAD"),
        "defaults": KeepConfig().model_dump(),
    }
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        work = Path(tmp)
        demo = run(work, "demo", CaptureConfig(source=str(DEMO)))
        result["demo"] = demo_report(demo.published, demo.stored, demo.events)
        result["demo_sweep"] = demo_sweep(demo.published)
        print("demo", json.dumps(result["demo"]), flush=True)

        road = run(work, "road-policy", CaptureConfig(source=str(ROAD)))
        road_every = run(work, "road-every", CaptureConfig(source=str(ROAD)), every_frame=True)
        result["road_clip"] = compare(work, road, road_every.db, road.frames)
        result["road_sweep"] = road_sweep(road.published, 25.0)
        clip_item_bytes = {
            kind: result["road_clip"][kind]["item_bytes"]
            for kind in ("with_embeddings", "without_embeddings")
        }
        print("road clip", json.dumps(result["road_clip"]["fewer"]), flush=True)

        camera = reencode(ROAD, 15.0, WORK / "solidWhiteRight-15fps.avi")
        live = CaptureConfig(source=str(camera), realtime=True, loop=True)
        loop = run(work, "loop", live, max_frames=int(args.loop_s * 15), cpu_of_decide=True)
        every = every_frame_queue(work, loop.published)
        result["live_loop"] = compare(work, loop, every, loop.frames, clip_item_bytes)
        result["live_loop"]["wall_s"] = loop.wall_s
        result["live_loop"]["novelty"] = novelty_rate(loop)
        result["live_loop"]["keep_stage_ms"] = stage(loop.keep_ms)
        result["live_loop"]["decide_cpu_ms"] = stage(loop.decide_cpu_ms)
        result["live_loop"]["stages_ms"] = loop.stages_ms
        print("live loop", json.dumps(result["live_loop"]["fewer"]), flush=True)

        result["decide_cost"] = decide_cost(road.published)
        result["near_duplicates"] = parked_car_distances(work, road)
        if args.baseline:
            commit = git("rev-parse", "--short", args.baseline)
            result["peak_rss"] = {"baseline_commit": commit, **rss(export(commit))}
    result["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    result["platform"] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keep_policy.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "keep_policy.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict[str, Any]) -> str:
    d = r["demo"]
    lines = [
        "# Keep policy: what is kept, what is lost, what it costs",
        "",
        f"`{r['command']}` at commit {r['commit']}, default bundle, default `[keep]` "
        f"(min_frames {r['defaults']['min_frames']}, end_frames {r['defaults']['end_frames']}, "
        f"heartbeat_s {r['defaults']['heartbeat_s']:g}, novelty target "
        f"{r['defaults']['novelty']['target_per_hour']:g}/h, radius "
        f"{r['defaults']['novelty']['radius']:g} in {r['defaults']['novelty']['radius_min']:g}.."
        f"{r['defaults']['novelty']['radius_max']:g}). Load average "
        f"{r['load_average']['before']:.1f} before, {r['load_average']['after']:.1f} after.",
        "",
        "## models/demo.mp4: scene changes and events",
        "",
        f"- {d['scenes_detected']} of {d['scenes']} scenes start with a kept `change` row: "
        f"recall {100 * d['recall']:.0f}% (goal 100%); {d['change_rows']} change rows, at most "
        f"{d['max_spurious_in_a_scene']} spurious in a scene (goal <= 1): "
        f"{d['spurious_per_scene']}.",
        f"- Events: {d['pairs_with_one_event']} of {d['scene_label_pairs']} (scene, label) pairs "
        f"have exactly one event (labels on at least half a scene's frames); without one: "
        f"{d['pairs_without_event'] or 'none'}; cut in several: "
        f"{d['pairs_with_several_events'] or 'none'}. {d['events']} events in all.",
        "",
        "The same published frames replayed through the policy with other hysteresis:",
        "",
        "| min_frames | end_frames | recall | max spurious/scene | change rows | pairs with one "
        "event | without | several | events |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for s in r["demo_sweep"]:
        lines.append(
            f"| {s['min_frames']} | {s['end_frames']} | {100 * s['recall']:.0f}% | "
            f"{s['max_spurious_in_a_scene']} | {s['change_rows']} | "
            f"{s['pairs_with_one_event']}/{s['scene_label_pairs']} | {s['pairs_without_event']} | "
            f"{s['pairs_with_several_events']} | {s['events']} |"
        )
    sections = (
        ("road_clip", "The road clip (221 frames, its own 25 FPS timeline)"),
        ("live_loop", "A loop of the road clip as a live camera at 15 FPS"),
    )
    for key, title in sections:
        c = r[key]
        title = title + (f", {c['wall_s']:.0f} s" if "wall_s" in c else "")
        lines += [
            "",
            f"## {title}",
            "",
            f"{c['frames']} frames; kept {c['rows']['policy']} rows ({c['kept_by_reason']}), "
            f"{c['events']} events.",
            "",
            "| | policy | every_frame | fewer | policy per 10-h day at 15 FPS "
            "| every_frame per day |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for what, unit in (("rows", "rows"), ("with_embeddings", "bytes"),
                           ("without_embeddings", "bytes")):  # fmt: skip
            per, day = c["per_frame"][what], c["day_at_15fps"][what]
            lines.append(
                f"| {what.replace('_', ' ')} ({unit} a frame) | {per['policy']:.4g} | "
                f"{per['every_frame']:.4g} | {c['fewer'][what]:.1f}x | {day['policy']:,.0f} | "
                f"{day['every_frame']:,.0f} |"
            )
        if "uploaded_bytes" in c["with_embeddings"]["policy"]:
            uploaded = {
                kind: c[kind]["policy"]["uploaded_bytes"] / c["frames"]
                for kind in ("with_embeddings", "without_embeddings")
            }
            lines += [
                "",
                "The policy's bytes above are its rows and events times the bytes per stored "
                "item of the clip run (with embeddings "
                f"{r['road_clip']['with_embeddings']['item_bytes']:.0f}, without "
                f"{r['road_clip']['without_embeddings']['item_bytes']:.0f}): the loop repeats "
                "its frames exactly, and as uploaded gzip made them "
                f"{uploaded['with_embeddings']:.3g} and {uploaded['without_embeddings']:.3g} "
                "bytes a frame, which no real drive would.",
            ]
        if "novelty" in c:
            n, k, cpu = c["novelty"], c["keep_stage_ms"], c["decide_cpu_ms"]
            scoring = c["stages_ms"]["scoring"]
            lines += [
                "",
                f"Novel frames: {n['novel']} in {n['hours'] * 60:.1f} min, "
                f"{n['novel_per_hour']:.0f} an hour (target "
                f"{r['defaults']['novelty']['target_per_hour']:g}). The runtime's `keep` stage "
                f"in this run (wall clock): p50 {k['p50']:.4f} ms, p90 {k['p90']:.4f}, p99 "
                f"{k['p99']:.4f} ({k['frames']} frames); the thread CPU time of "
                f"`decide` p50 {cpu['p50']:.4f} ms, p90 {cpu['p90']:.4f}; for scale, the "
                f"`scoring` stage (a few dot products, unchanged by this work) p50 "
                f"{scoring['p50']:.4f} ms.",
            ]
    lines += [
        "",
        "The road clip's published frames replayed with other hysteresis (rows include best "
        "frames):",
        "",
        "| min_frames | end_frames | rows a frame | events | kept by reason |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for w in r["road_sweep"]:
        lines.append(
            f"| {w['min_frames']} | {w['end_frames']} | {w['rows_per_frame']:.4f} | "
            f"{w['events']} | {w['kept_by_reason']} |"
        )
    cost, near = r["decide_cost"], r["near_duplicates"]
    lines += [
        "",
        "## Cost and near-duplicates",
        "",
        f"- `KeepPolicy.decide`, warm, {cost['kept_embeddings']} kept embeddings compared: "
        f"{cost['ms_per_frame_median']:.4f} ms a frame (median of "
        f"{len(cost['ms_per_frame_batches'])} batches of 1,000; goal <= 0.05 ms).",
        f"- A parked car (the clip's first frame, sensor noise and JPEG, 100 times): cosine "
        f"distance to the first p50 {near['parked']['p50']:.5f}, p99 {near['parked']['p99']:.5f}, "
        f"max {near['parked']['max']:.5f}; consecutive frames of the drive p50 "
        f"{near['driving_consecutive_frames']['p50']:.5f}, p99 "
        f"{near['driving_consecutive_frames']['p99']:.5f}.",
    ]
    if "peak_rss" in r:
        rss_rows = r["peak_rss"]
        lines += [
            "",
            f"## Peak RSS of the dry run (MiB; baseline {rss_rows['baseline_commit']}, this tree; "
            "3 runs each, alternating)",
            "",
            "| video | baseline | this tree | difference (goal within 1 MiB) |",
            "| --- | --- | --- | ---: |",
        ]
        for video in (DEMO.name, ROAD.name):
            v = rss_rows[video]
            lines.append(
                f"| {video} | {' '.join(f'{x:.1f}' for x in v['samples_mib']['baseline'])} | "
                f"{' '.join(f'{x:.1f}' for x in v['samples_mib']['this_tree'])} | "
                f"{v['difference_mib']:+.1f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
