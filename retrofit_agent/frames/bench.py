"""`retrofit-agent bench`: the bare model and the whole pipeline, measured on the device itself.

Bare model: the student alone on one real preprocessed frame, run after run (p50, p90, FPS).
Pipeline: the dry run's loop (decode, preprocess, inference, scoring, SQLite, ZeroMQ) over a
video, as fast as it goes. The two alternate for `rounds` rounds and their FPS ratio is taken
per round, so drift on a shared or throttling CPU hits both alike. Peak RSS is the process's
high-water mark: about what an agent running this bundle needs.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from retrofit_agent.config import DEFAULT_MODEL, AgentConfig, CaptureConfig
from retrofit_agent.errors import SourceError
from retrofit_agent.frames.pipeline import Pipeline
from retrofit_agent.frames.runtime import Runtime, open_frames
from retrofit_agent.frames.stats import STAGES, quantiles

# Next to the repository, as in a development checkout; on a camera, pass --video.
DEFAULT_VIDEO = DEFAULT_MODEL.parent.parent.parent / "shared/data/video/solidWhiteRight.mp4"
WARMUP_RUNS = 10  # first runs allocate buffers and pick kernels
ANY_LOCAL_PORT = "tcp://127.0.0.1:*"  # never collides with an agent running on the device


def default_video() -> Path:
    if not DEFAULT_VIDEO.is_file():
        raise SourceError(f"{DEFAULT_VIDEO}: no default video here; pass --video FILE")
    return DEFAULT_VIDEO


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p90 = quantiles(np.asarray(values), (0.5, 0.9))
    return {"p50": float(p50), "p90": float(p90)}


def peak_rss_mib() -> float:
    """The process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_input(pipeline: Pipeline, video: Path) -> np.ndarray:
    """The video's first frame, preprocessed: what the bare model is timed on."""
    with open_frames(CaptureConfig(source=str(video)), pipeline.prepare) as source:
        frame = next(iter(source), None)
        if frame is None or frame.prepared is None:
            raise SourceError(f"{video}: no decodable frame")
        return frame.prepared.input.copy()


def time_model(pipeline: Pipeline, batch: np.ndarray, runs: int) -> dict[str, Any]:
    """`runs` back-to-back inferences, as the agent calls the student: latencies (ms), CPU."""
    samples = []
    cpu = time.thread_time()
    for _ in range(runs):
        start = time.perf_counter()
        pipeline.embedder(batch)
        samples.append((time.perf_counter() - start) * 1e3)
    cpu_ms = (time.thread_time() - cpu) * 1e3 / runs
    return {"ms": samples, "fps": runs / (sum(samples) / 1e3), "cpu_ms": cpu_ms}


def run_pipeline(pipeline: Pipeline, config: AgentConfig, video: Path) -> dict[str, Any]:
    """One dry run over `video` into a temporary database: its summary and CPU per frame.

    The service's own assembly (Runtime), publishing on a free local port."""
    with tempfile.TemporaryDirectory(prefix="retrofit-bench-") as tmp:
        run_config = config.model_copy(
            update={
                "store": config.store.model_copy(update={"path": Path(tmp) / "bench.db"}),
                "publish": config.publish.model_copy(
                    update={"enabled": True, "endpoint": ANY_LOCAL_PORT}
                ),
            }
        )
        with Runtime(run_config, CaptureConfig(source=str(video)), pipeline) as runtime:
            cpu, process_cpu = time.thread_time(), time.process_time()
            stats = runtime.run()  # on this thread: the inference thread
            frames = max(stats.frames, 1)
            cpu_ms = (time.thread_time() - cpu) * 1e3 / frames
            process_cpu_ms = (time.process_time() - process_cpu) * 1e3 / frames
    return {
        **stats.summary(),
        "samples": stats.latency_ms,
        "cpu_ms": cpu_ms,
        "all_cpu_ms": process_cpu_ms,
    }


def bench(config: AgentConfig, video: Path, rounds: int = 3, runs: int = 100) -> dict[str, Any]:
    """Bare model and pipeline, alternating for `rounds` rounds; a JSON-ready report.

    Besides wall-clock FPS, CPU time per frame: the bare model's, and the pipeline's on its
    inference thread. On a shared machine the wall-clock ratio also measures the neighbours
    (the pipeline runs two busy threads, the bare model one); the CPU ratio is what a
    dedicated device gets while the reader thread fits on the second core.
    """
    pipeline = Pipeline(config)
    batch = first_input(pipeline, video)
    time_model(pipeline, batch, WARMUP_RUNS)
    load_before = os.getloadavg()
    model_ms: list[float] = []
    stage_ms: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    per_round = []
    for _ in range(rounds):
        model = time_model(pipeline, batch, runs)
        model_ms += model["ms"]
        summary = run_pipeline(pipeline, config, video)
        for stage, window in summary["samples"].items():
            stage_ms[stage] += window.values().tolist()
        per_round.append(
            {
                "model_fps": model["fps"],
                "model_cpu_ms": model["cpu_ms"],
                "pipeline_fps": summary["fps"],
                "pipeline_cpu_ms": summary["cpu_ms"],
                "pipeline_all_threads_cpu_ms": summary["all_cpu_ms"],
                "frames": summary["frames"],
                "ratio": summary["fps"] / model["fps"],
                "cpu_ratio": model["cpu_ms"] / summary["cpu_ms"],
            }
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in per_round)

    return {
        "model": pipeline.model_ref.model_dump(),
        "video": str(video),
        "threads": {
            "intra_op": config.embedder.intra_op_threads,
            "inter_op": config.embedder.inter_op_threads,
        },
        "rounds": rounds,
        "bare_model": {
            "runs": len(model_ms),
            "latency_ms": percentiles(model_ms),
            "fps": median("model_fps"),
            "cpu_ms_per_frame": median("model_cpu_ms"),
        },
        "pipeline": {
            "frames": sum(r["frames"] for r in per_round),
            "fps": median("pipeline_fps"),
            "inference_thread_cpu_ms_per_frame": median("pipeline_cpu_ms"),
            "all_threads_cpu_ms_per_frame": median("pipeline_all_threads_cpu_ms"),
            "latency_ms": {stage: percentiles(v) for stage, v in stage_ms.items() if v},
        },
        "pipeline_vs_bare": median("ratio"),
        "pipeline_vs_bare_cpu": median("cpu_ratio"),
        "per_round": per_round,
        "peak_rss_mib": peak_rss_mib(),
        "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
        "platform": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
        },
    }


def format_report(report: dict[str, Any]) -> str:
    bare, pipe, load = report["bare_model"], report["pipeline"], report["load_average"]
    threads = report["threads"]
    lines = [
        f"model     {report['model']['name']} (manifest {report['model']['manifest_sha256'][:12]})",
        f"video     {report['video']}",
        f"threads   intra-op {threads['intra_op']}, inter-op {threads['inter_op']}; "
        f"{report['rounds']} rounds, model and pipeline alternating",
        f"bare      {bare['fps']:.1f} FPS, p50 {bare['latency_ms']['p50']:.2f} ms, "
        f"p90 {bare['latency_ms']['p90']:.2f} ms ({bare['runs']} runs)",
        f"pipeline  {pipe['fps']:.1f} FPS ({pipe['frames']} frames): "
        f"{100 * report['pipeline_vs_bare']:.0f}% of the bare model",
        f"CPU       {bare['cpu_ms_per_frame']:.2f} ms a frame bare, "
        f"{pipe['inference_thread_cpu_ms_per_frame']:.2f} ms on the pipeline's inference "
        f"thread ({100 * report['pipeline_vs_bare_cpu']:.0f}%), "
        f"{pipe['all_threads_cpu_ms_per_frame']:.2f} ms on all its threads",
        f"peak RSS  {report['peak_rss_mib']:.1f} MiB",
        f"load avg  {load['before']:.2f} before, {load['after']:.2f} after (other processes "
        "slow the two-thread pipeline more than the one-thread bare model)",
        "",
        f"{'stage':<12}{'p50 ms':>10}{'p90 ms':>10}",
    ]
    for stage, p in pipe["latency_ms"].items():
        lines.append(f"{stage:<12}{p['p50']:>10.2f}{p['p90']:>10.2f}")
    return "\n".join(lines)
