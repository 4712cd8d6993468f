"""Which onnxruntime settings for the agent: variants of its session options, timed interleaved.

Every model gets one session per variant in this process; rounds visit the sessions in turn
(a few warm-up runs, then timed single-frame runs, as the agent calls the student), so drift
hits all variants alike. Reported: median ms per model and variant, and each variant's ratio
to the agent's own settings (retrofit_agent.embedder.session_options).

    python bench/session_options.py models/default/student.int8.onnx \\
        bench/.work/mobilenetv3_large_100/qdq_u8s8.onnx bench/.work/efficientnet_b3/qdq_u8s8.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from retrofit_agent.distill.speed import feed
from retrofit_agent.frames.embedder import session_options

REPO = Path(__file__).resolve().parent.parent

LEVELS = ort.GraphOptimizationLevel
NO_SPIN = {"session.intra_op.allow_spinning": "0"}
VARIANTS: dict[str, dict[str, Any]] = {
    "agent": {},
    "ENABLE_EXTENDED": {"level": LEVELS.ORT_ENABLE_EXTENDED},
    "ENABLE_BASIC": {"level": LEVELS.ORT_ENABLE_BASIC},
    "no mem pattern": {"mem_pattern": False},
    "no CPU arena": {"arena": False},
    "2 threads": {"threads": 2},
    "2 threads, no spin": {"threads": 2, "config": NO_SPIN},
}


def session(path: Path, variant: dict[str, Any]) -> ort.InferenceSession:
    options = session_options(variant.get("threads", 1))
    if "level" in variant:
        options.graph_optimization_level = variant["level"]
    options.enable_mem_pattern = variant.get("mem_pattern", True)
    options.enable_cpu_mem_arena = variant.get("arena", True)
    for key, value in variant.get("config", {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(path: Path, rounds: int, runs: int) -> dict[str, float]:
    """Median ms of every variant on `path`, interleaved round by round."""
    sessions = {name: session(path, variant) for name, variant in VARIANTS.items()}
    inputs = feed(next(iter(sessions.values())), np.random.default_rng(0))
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            for _ in range(2):
                s.run(None, inputs)
            for _ in range(runs):
                start = time.perf_counter()
                s.run(None, inputs)
                samples[name].append((time.perf_counter() - start) * 1e3)
            time.sleep(0.01)  # the previous session's spinning threads go to sleep
    return {name: statistics.median(values) for name, values in samples.items()}


def markdown(results: dict[str, dict[str, float]], command: str, load: list[float]) -> str:
    names = list(VARIANTS)
    lines = [
        "# onnxruntime session options for the agent",
        "",
        f"Made by `{command}`: median ms of single-frame runs, interleaved; in brackets the "
        "ratio to the agent's settings (ORT_ENABLE_ALL, 1 intra-op thread, sequential, arena and "
        f"memory pattern on; lower is faster). Load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after.",
        "",
        "| model | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for model, medians in results.items():
        base = medians["agent"]
        cells = [f"{medians[n]:.2f} ({medians[n] / base:.2f})" for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    results = {
        f"{path.parent.name}/{path.name}": compare(path, args.rounds, args.runs)
        for path in args.models
    }
    command = " ".join(["python", "bench/session_options.py", *sys.argv[1:]])
    load = [before, os.getloadavg()[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "load_average": load, "median_ms": results}
    (args.out / "session_options.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "session_options.md").write_text(markdown(results, command, load))
    print(markdown(results, command, load))


if __name__ == "__main__":
    main()
