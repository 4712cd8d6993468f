"""The `retrofit-agent` command line (contract 4, docs/contracts/command-line.md).

Every expected failure is one line on stderr, `retrofit-agent: error: ...`, and the error's
sysexits-style code (see retrofit_agent.errors); native libraries' own chatter on stderr is
kept apart from those lines (common.stderr). Resources are opened in the order bundle,
source, database, socket, so bad input fails before anything is written. A source that fails
part-way (a truncated video) still gets the dry run's summary of the frames it delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from retrofit_agent import __version__
from retrofit_agent.bundle.sections import NoTeacher
from retrofit_agent.common import logs, stderr
from retrofit_agent.config import load_config
from retrofit_agent.errors import RetrofitError, SourceError
from retrofit_agent.frames.runtime import Runtime
from retrofit_agent.frames.stats import RunStats
from retrofit_agent.store.queue import open_store

INTERRUPTED = 130
USAGE = (
    "usage: retrofit-agent {--dry-run VIDEO | queue | upload | run | bench} [options] "
    "(--help for all of them)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrofit-agent",
        description="Label camera frames with a distilled CLIP student (zero-shot).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--dry-run",
        metavar="VIDEO",
        type=Path,
        help="run the whole pipeline on a video file or image folder, print a summary, exit",
    )
    parser.add_argument("--config", type=Path, help="agent config (TOML)")
    parser.add_argument("--model", type=Path, help="model bundle directory (default: bundled)")
    parser.add_argument("--labels", type=Path, help="a labels.npz replacing the bundle's")
    parser.add_argument("--db", type=Path, help="observation database (default: temporary)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    parser.add_argument("--realtime", action="store_true", help="pace at the native frame rate")
    parser.add_argument("--publish", metavar="ENDPOINT", help="ZeroMQ endpoint to bind")
    parser.add_argument("--no-publish", action="store_true", help="do not open a ZeroMQ socket")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    queue = commands.add_parser("queue", help="inspect or maintain the observation database")
    queue.add_argument("action", choices=["stats", "export", "vacuum"])
    queue.add_argument("--db", type=Path, dest="queue_db", help="database (default: config's)")
    queue.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="agent config")
    queue.add_argument(
        "--state", choices=["pending", "uploaded", "quarantined"], help="export: only this state"
    )
    upload = commands.add_parser("upload", help="send queued observations to the ingest server")
    upload.add_argument(
        "--once", action="store_true", help="exit when the queue is empty or budget/window stop"
    )
    upload.add_argument("--db", type=Path, dest="upload_db", help="database (default: config's)")
    # also accepted after the command; SUPPRESS keeps a --config given before it
    upload.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="agent config")
    serve = commands.add_parser("run", help="the service on a live camera (systemd runs this)")
    serve.add_argument("--config", type=Path, required=True, help="agent config (TOML)")
    bench = commands.add_parser("bench", help="bare model and pipeline FPS, stages, peak RSS")
    bench.add_argument("--video", type=Path, help="default: ../shared's solidWhiteRight.mp4")
    bench.add_argument("--rounds", type=int, default=3, help="model/pipeline rounds (3)")
    bench.add_argument("--runs", type=int, default=100, help="bare model runs per round (100)")
    for option, kind in (("--model", Path), ("--config", Path)):
        bench.add_argument(option, type=kind, default=argparse.SUPPRESS)
    bench.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    stderr.separate()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command and args.dry_run:
        parser.error("--dry-run cannot be combined with a command")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.command == "bench" and min(args.rounds, args.runs) < 1:
        parser.error("--rounds and --runs must be at least 1")
    try:
        if args.dry_run:
            return dry_run(args)
        if args.command == "queue":
            return queue_command(args)
        if args.command == "upload":
            return upload_command(args)
        if args.command == "run":
            from retrofit_agent.service import daemon  # the dry run does without its imports

            return daemon.main(args.config)
        if args.command == "bench":
            return bench_command(args)
    except RetrofitError as exc:
        print(f"retrofit-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(USAGE, file=sys.stderr)
    return 2


def dry_run(args: argparse.Namespace) -> int:
    failure: SourceError | None = None
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="retrofit-dry-run-")))
        config = load_config(
            args.config,
            overrides={
                "model": args.model,
                "labels": args.labels,
                "store.path": args.db or tmp / "observations.db",
                "publish.endpoint": args.publish,
                "publish.enabled": False if args.no_publish else None,
                # the config's [capture] (its max_pixels) with VIDEO as the source, played once
                "capture.source": str(args.dry_run),
                "capture.realtime": args.realtime,
                "capture.loop": False,
            },
        )
        assert config.capture is not None
        runtime = stack.enter_context(Runtime(config, config.capture))
        pipeline = runtime.pipeline
        if isinstance(pipeline.bundle.manifest.teacher, NoTeacher):
            print(
                f"retrofit-agent: warning: model {pipeline.model_ref.name} has random weights, "
                "its labels are meaningless (see models/README.md)",
                file=sys.stderr,
            )
        progress = Progress(runtime.source.total)
        try:
            stats = runtime.run(args.max_frames, progress)
        except SourceError as exc:  # truncated, or a bad image in a folder: report what was done
            failure, stats = exc, runtime.stats
        progress.done()
        summary = {
            "model": pipeline.model_ref.model_dump(),
            "source": runtime.source.name,
            "database": str(args.db) if args.db else None,
            "stored_rows": runtime.store.stats()["rows"],
            **stats.summary(),
            "error": str(failure) if failure else None,
        }
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if failure is not None:
        raise failure
    return INTERRUPTED if stats.interrupted else 0


def queue_command(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides={"store.path": args.queue_db})
    store = open_store(config.store, existing=True)
    try:
        if args.action == "stats":
            print(json.dumps(store.stats(), indent=2))
        elif args.action == "export":
            for observation in store.observations(args.state):
                sys.stdout.write(observation.model_dump_json() + "\n")
        else:
            before = store.stats()["file_bytes"]
            store.vacuum()
            print(f"vacuumed {store.path}: {before} -> {store.stats()['file_bytes']} bytes")
    finally:
        store.close()
    return 0


def upload_command(args: argparse.Namespace) -> int:
    """Drain the queue to `upload.endpoint`; print what was done as JSON."""
    from retrofit_agent.transport.upload import (
        Uploader,  # here: ssl and http.client cost ~3 MiB RSS
    )

    config = load_config(args.config, overrides={"store.path": args.upload_db})
    logs.setup("WARNING", command="retrofit-agent")
    store = open_store(config.store, existing=True)
    try:
        uploader = Uploader(config.upload, store)
        try:
            stats = uploader.drain(once=args.once)
        finally:
            uploader.close()
        queue = store.stats()
    finally:
        store.close()
    states = {k: queue[k] for k in ("pending", "uploaded", "quarantined")}
    states["events"] = {
        k: queue["events"][k] for k in ("open", "pending", "uploaded", "quarantined")
    }
    print(json.dumps({**stats.as_dict(), "queue": states}, indent=2))
    return INTERRUPTED if stats.stopped == "interrupted" else 0


def bench_command(args: argparse.Namespace) -> int:
    """Measure the bundle on this device (retrofit_agent.frames.bench); print the report."""
    from retrofit_agent.frames import bench  # only this command needs it

    config = load_config(args.config, overrides={"model": args.model})
    report = bench.bench(config, args.video or bench.default_video(), args.rounds, args.runs)
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


class Progress:
    """Frames done and FPS on stderr, at most twice a second, only on a terminal."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()
        self._shown_at = 0.0
        self._started = time.perf_counter()

    def __call__(self, stats: RunStats) -> None:
        now = time.perf_counter()
        if self.enabled and now - self._shown_at >= 0.5:
            self._shown_at = now
            of = f"/{self.total}" if self.total else ""
            fps = stats.frames / (now - self._started)
            sys.stderr.write(f"\r{stats.frames}{of} frames, {fps:.1f} FPS ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._shown_at:
            sys.stderr.write("\n")


def format_summary(summary: dict[str, Any]) -> str:
    model = summary["model"]
    kept, events = summary["kept"], summary["events"]
    reasons = ", ".join(f"{reason} {n}" for reason, n in kept["by_reason"].items())
    closed = ", ".join(f"{reason} {n}" for reason, n in events["ended"].items())
    skipped = [
        f", {summary['skipped']} skipped (disk full)" if summary["skipped"] else "",
        f", {summary['degenerate']} skipped (degenerate embedding)"
        if summary["degenerate"]
        else "",
    ]
    ended = " (interrupted)" if summary["interrupted"] else ""
    ended += " (stopped by the error below)" if summary["error"] else ""
    lines = [
        f"model    {model['name']} (manifest {model['manifest_sha256'][:12]})",
        f"source   {summary['source']}",
        f"database {summary['database'] or '(temporary)'}: {summary['stored_rows']} rows",
        f"frames   {summary['frames']} processed, {summary['dropped']} dropped{''.join(skipped)} "
        f"in {summary['wall_s']:.2f} s: {summary['fps']:.1f} FPS{ended}",
        f"kept     {kept['observations']} observations" + (f": {reasons}" if reasons else ""),
        f"events   {events['started']} started" + (f", ended: {closed}" if closed else ""),
        "",
        f"{'stage':<22}{'p50 ms':>10}{'p90 ms':>10}",
    ]
    for stage, p in summary["latency_ms"].items():
        name = "total (excl. capture)" if stage == "total" else stage
        lines.append(f"{name:<22}{p['p50']:>10.2f}{p['p90']:>10.2f}")
    # "(" sorts before letters and digits: each group's frames without a label come first
    rows = {**summary["labels"], **{f"{g}/(no label)": n for g, n in summary["no_label"].items()}}
    lines += ["", f"{'label':<40}{'frames':>8}{'events':>8}"]
    for label, count in sorted(rows.items()):
        lines.append(f"{label:<40}{count:>8}{events['by_label'].get(label, 0):>8}")
    return "\n".join(lines)
