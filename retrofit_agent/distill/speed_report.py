"""The model-speed report (retrofit_agent.distill.speed.make_report) as Markdown and a plot.

`write_report` leaves three files: NAME.json (everything, the raw samples included), NAME.md
(the targets, then one table per thread count) and NAME.png (latency per model, log scale).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from retrofit_agent.distill.speed import CLIP, PEAK_SIZES, TARGETS


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    run = report["run"]
    bundle = next(t["model"] for t in report["targets"] if not t["reference_only"])
    lines = [
        "# Model speed: the student against a CLIP ViT-B/32 image tower",
        "",
        f"Made by `{report['command']}` on {run['date']}: {run['cpu']} ({run['cores']} cores), "
        f"onnxruntime {run['onnxruntime']}, Python {run['python']}. {run['rounds']} rounds; "
        f"in each, every model at every thread count in a random order, {run['runs']} timed "
        f"runs a turn, one worker process per model, random weights. Load average "
        f"{run['load_before'][0]:.2f} before, {run['load_after'][0]:.2f} after (a shared "
        "machine: compare ratios within this run, not with other runs).",
        "",
        "## Targets",
        "",
        f"The bundle's shipped INT8 student ({bundle}) against the CLIP ViT-B/32 image tower at "
        "the same thread count; the other students' fastest INT8 mode for reference (what a "
        "default bundle with that backbone would score).",
        "",
        f"| student | INT8 | threads | x CLIP FP32 (goal {TARGETS['vs_clip_fp32']:g}) "
        f"| x CLIP INT8 (goal {TARGETS['vs_clip_int8']:g}) |",
        "| --- | --- | ---: | --- | --- |",
    ]
    targets = report["targets"]
    for i in range(0, len(targets), len(TARGETS)):
        first = targets[i]
        cells = [
            f"{t['achieved']:.1f}x "
            + ("met" if t["met"] else f"missed, {100 * (1 - t['margin']):.0f}% short")
            for t in targets[i : i + len(TARGETS)]
        ]
        role = "reference" if first["reference_only"] else "the bundle"
        lines.append(
            f"| {first['model']} ({role}) | {first['variant']} | {first['threads']} "
            f"| {' | '.join(cells)} |"
        )
    for t in run["threads"]:
        peak = report["peak_gflop_per_s"][t]
        lines += [
            "",
            f"## {t} thread{'s' if t > 1 else ''}",
            "",
            f"Matmul peak (onnxruntime, the fastest of {', '.join(map(str, PEAK_SIZES))} cubed): "
            f"FP32 {peak['fp32']:.1f} GFLOP/s, U8S8 {peak['int8']:.1f} GOP/s. "
            "CLIP INT8 baseline: its fastest mode here, "
            f"{report['clip_int8_fastest'][t].split('/')[1]}.",
            "",
            "| model | variant | GFLOP | median ms | p90 ms | FPS | GFLOP/s | % of peak "
            "| x CLIP FP32 | x CLIP INT8 | RSS MiB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in (r for r in report["rows"] if r["threads"] == t):
            share = r.get("share_of_peak")
            lines.append(
                f"| {r['model']} | {r['variant']} | {_num(r.get('gflops'), 2)} "
                f"| {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['fps']:.1f} "
                f"| {_num(r.get('gflop_per_s'))} | {_num(share and 100 * share, 0)} "
                f"| {r['vs_clip_fp32']:.1f} | {r['vs_clip_int8']:.1f} | {_num(r['rss_mib'], 0)} |"
            )
    lines += [
        "",
        "GFLOP: 2 x multiply-adds of the Conv/MatMul/Gemm nodes of the FP32 graph at batch 1 "
        "(INT8 variants do the same work); % of peak: GFLOP/s over the matmul peak of the same "
        "precision. RSS: the worker process with one session of the fewest threads, including "
        f"Python, numpy, onnx and onnxruntime ({report['worker_baseline_rss_mib']:.0f} MiB with "
        "the matmul peak's tiny model).",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = report["run"]["threads"]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, threads, strict=True):
        rows = [r for r in report["rows"] if r["threads"] == t]
        labels = [f"{r['model']}/{r['variant']}" for r in rows]
        colors = ["tab:red" if r["model"] == CLIP else "tab:blue" for r in rows]
        ax.barh(labels, [r["median_ms"] for r in rows], color=colors)
        ax.set_xscale("log")
        ax.set_xlabel("median latency, ms (log)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
    axes[0].invert_yaxis()  # shared by all: once, so the first model is on top
    fig.suptitle("Single-frame latency, onnxruntime CPU (red: CLIP ViT-B/32 image tower)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path, name: str) -> None:
    """`name`.json (everything, samples included), `name`.md and `name`.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    plot(report, out / f"{name}.png")
