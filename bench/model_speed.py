"""Model speed: the bundle's student against a CLIP ViT-B/32 image tower, in one interleaved run.

Every model runs in its own worker process, with one onnxruntime session per thread count set
up as the agent's (retrofit_agent.embedder.session_options). The workers take turns: each
round visits every model at every thread count in a fresh random order, so drift on a shared
machine (other users, throttling) spreads over all models alike. Reported per model and thread
count: median and p90 latency, FPS, achieved GFLOP/s (2 x the multiply-adds of the Conv, MatMul
and Gemm nodes, over the median) against a matmul peak timed the same way (an onnxruntime
MatMul in FP32 and a U8S8 MatMulInteger), and the speed ratios over the CLIP tower.

Models (random weights: speed does not depend on them):
- the bundle's student: student.fp32.onnx when present, the shipped student.int8.onnx, and
  every INT8 mode rebuilt from the FP32 graph by retrofit_agent.distill.quantize;
- efficientnet_b3, mobilenetv3_large_100 and resnet10t students (retrofit_agent.distill.student
  at 224 px, exported and quantized by the same code as a trained student), so the seed's is
  compared;
- the CLIP ViT-B/32 image tower (open_clip, pretrained=None), FP32 and every INT8 mode.
Built models are kept in --work and reused; the students are also written there as bundles
(with the given bundle's label bank) for `retrofit-agent bench --model`.

    python bench/model_speed.py --model models/default --out bench/results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from retrofit_agent.bundle.manifest import (
    LABELS,
    STUDENT_FP32,
    STUDENT_INT8,
    load_bundle,
    write_manifest,
)
from retrofit_agent.frames.embedder import session_options

REPO = Path(__file__).resolve().parent.parent
CLIP = "clip_vit_b32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TARGETS = {"vs_clip_fp32": 10.0, "vs_clip_int8": 4.0}  # the bundle's shipped INT8 student
PEAK_SIZES = (256, 512, 1024)  # M = K = N of the matmul peak: the fastest size counts
WARMUP_FIRST = 5  # runs after a session is created: allocation, kernel choice
WARMUP_TURN = 2  # runs at the start of every turn: caches are cold after another worker
PAUSE_S = 0.02  # between turns: the previous worker's spinning threads go to sleep
# op type -> input index of the weight whose dims are the inner (reduced) ones
CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
MATMUL_OPS = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}


@dataclass
class Model:
    """One ONNX file to time: `family` (bundle name, backbone, CLIP, peak) and its variant."""

    family: str
    variant: str
    path: Path
    flops: int | None
    precision: str  # fp32 or int8: which matmul peak it is held against

    @property
    def name(self) -> str:
        return f"{self.family}/{self.variant}"


# --- FLOPs ---------------------------------------------------------------------------------


def graph_flops(path: Path) -> int:
    """2 x multiply-adds of the Conv/MatMul/Gemm nodes (and their INT8 forms) at batch 1.

    Nodes whose shapes ONNX shape inference cannot resolve are left out (in the CLIP tower:
    the 12 attention-times-values products, about 1% of its work).
    """
    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(dims):  # dim_value 0: unknown
            shapes[value.name] = dims
    return 2 * sum(_macs(node, shapes) for node in graph.node)


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    if node.op_type not in CONV_OPS and node.op_type not in MATMUL_OPS:
        return 0
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if node.op_type in CONV_OPS:
        weight = shapes.get(node.input[CONV_OPS[node.op_type]])
        return int(np.prod(out)) * int(np.prod(weight[1:])) if out and weight else 0
    if not a:
        return 0
    b = shapes.get(node.input[MATMUL_OPS[node.op_type]])
    if node.op_type == "Gemm" and b:  # [M, K] x [K, N], either transposed
        k = a[0] if _attribute(node, "transA") else a[1]
        return int(np.prod(a)) // k * k * (b[0] if _attribute(node, "transB") else b[1])
    n = out[-1] if out else b[-1] if b else 0
    return int(np.prod(a)) * n  # [..., M, K] x [..., K, N]


def _attribute(node: onnx.NodeProto, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


# --- building the models -------------------------------------------------------------------


def matmul_peak(path: Path, int8: bool, size: int) -> Model:
    """A single [size x size] @ [size x size] product: FP32 MatMul or U8S8 MatMulInteger."""
    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-128, 128, (size, size), np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        types = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = numpy_helper.from_array(rng.standard_normal((size, size), np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        types = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", types[0], [size, size])],
        [helper.make_tensor_value_info("Y", types[1], [size, size])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    precision = "int8" if int8 else "fp32"
    return Model("matmul_peak", f"{precision}_{size}", path, 2 * size**3, precision)


def calibration_frames(video: Path, count: int, bundle: Path | None = None) -> np.ndarray:
    """`count` real frames spread over the video, preprocessed as the bundle (or CLIP) wants."""
    import cv2

    from retrofit_agent.frames.preprocess import Preprocessor

    if bundle is not None:
        m = load_bundle(bundle).manifest
        pre = Preprocessor(m.size, m.resize.shortest_side, m.resize.interpolation, m.mean, m.std)
    else:
        pre = Preprocessor(224, 224, "bicubic", CLIP_MEAN, CLIP_STD)
    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted = set(np.linspace(0, total - 1, count).round().astype(int))
    frames = []
    for index in range(total):
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(pre(image).copy())
    capture.release()
    return np.concatenate(frames)


def quantized(fp32: Path, work: Path, modes: list[str], calibration: np.ndarray) -> dict:
    """Every INT8 mode of `fp32` the distillation's quantizer can build, built once into
    `work`; a mode that fails is left out (and said so)."""
    from retrofit_agent.distill.config import QuantizeConfig
    from retrofit_agent.distill.quantize import build_variants

    missing = [m for m in modes if not (work / f"{m}.onnx").is_file()]
    if missing:
        config = QuantizeConfig(modes=missing, calibration_frames=len(calibration))
        _, failed = build_variants(fp32, work, calibration, config)
        (work / "prepared.onnx").unlink()
        for failure in failed:
            print(f"{fp32}: {failure['mode']} left out: {failure['error']}", file=sys.stderr)
    return {mode: work / f"{mode}.onnx" for mode in modes if (work / f"{mode}.onnx").is_file()}


def exported(work: Path, build) -> Path:
    """`work/fp32.onnx`, exported from the torch module `build()` returns unless already there."""
    from retrofit_agent.distill.export import export_onnx

    path = work / "fp32.onnx"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        export_onnx(build(), 224, path)
    return path


def student_module(backbone: str, dim: int):
    from retrofit_agent.distill.student import Student

    return Student(backbone, dim, hidden=(1024,), dropout=0.0)


def clip_module():
    """The ViT-B/32 image tower, L2-normalised like a student (the contract's `embedding`)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = open_clip.create_model("ViT-B-32", pretrained=None).visual

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.visual(images), dim=-1)

    return Tower()


def family_models(family: str, fp32: Path, variants: dict[str, Path]) -> list[Model]:
    flops = graph_flops(fp32)
    models = [Model(family, "fp32", fp32, flops, "fp32")]
    return models + [Model(family, mode, path, flops, "int8") for mode, path in variants.items()]


def build_models(args: argparse.Namespace) -> list[Model]:
    """The bundle's student, the timm students, CLIP and the matmul peaks; cached in --work."""
    bundle = load_bundle(args.model)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    models = [
        matmul_peak(work / f"peak_{precision}_{n}.onnx", precision == "int8", n)
        for precision in ("fp32", "int8")
        for n in PEAK_SIZES
    ]
    family = bundle.manifest.name
    frames = calibration_frames(args.video, args.calibration_frames, bundle.path)
    shipped = bundle.path / STUDENT_INT8
    if (bundle.path / STUDENT_FP32).is_file():
        fp32 = bundle.path / STUDENT_FP32
        cache = work / f"bundle-{family}-{bundle.manifest_sha256[:12]}"
        cache.mkdir(exist_ok=True)
        models += family_models(family, fp32, quantized(fp32, cache, args.modes, frames))
        flops = models[-1].flops
    else:
        flops = graph_flops(shipped)
    models.append(Model(family, "shipped_int8", shipped, flops, "int8"))

    dim = bundle.manifest.embedding_dim
    frames = calibration_frames(args.video, args.calibration_frames)
    for backbone in args.students:
        cache = work / f"{backbone}-{dim}d"  # the head's width follows the bundle's labels
        fp32 = exported(cache, lambda b=backbone: student_module(b, dim))
        variants = quantized(fp32, cache, args.modes, frames)
        models += family_models(backbone, fp32, variants)
        write_student_bundle(work / "bundles" / cache.name, backbone, fp32, variants, bundle)
    fp32 = exported(work / CLIP, clip_module)
    return models + family_models(CLIP, fp32, quantized(fp32, work / CLIP, args.modes, frames))


def write_student_bundle(out: Path, backbone: str, fp32: Path, variants: dict, bundle) -> None:
    """A random-weight student as a model bundle (the given bundle's labels), for `bench`."""
    mode = "qdq_u8s8" if "qdq_u8s8" in variants else next(iter(variants))
    if out.is_dir():
        return
    out.mkdir(parents=True)
    shutil.copyfile(fp32, out / STUDENT_FP32)
    shutil.copyfile(variants[mode], out / STUDENT_INT8)
    shutil.copyfile(bundle.labels_path, out / LABELS)
    write_manifest(
        out,
        name=f"bench-{backbone}",
        teacher={"kind": "none", "note": "random weights: the labels are meaningless"},
        student={
            "architecture": f"{backbone} + MLP head [1024]",
            "built_by": "bench/model_speed.py",
        },
        size=224,
        resize={"shortest_side": 224, "interpolation": "bicubic"},
        mean=CLIP_MEAN,
        std=CLIP_STD,
        embedding_dim=bundle.manifest.embedding_dim,
        logit_scale=bundle.manifest.logit_scale,
        quantization={"mode": mode, "calibration": "frames of the benchmark video"},
    )


# --- timing: one worker process per model ---------------------------------------------------


def feed(session: ort.InferenceSession, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random inputs of the model's declared shapes (symbolic dimensions as 1)."""
    inputs = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]
        if value.type == "tensor(uint8)":
            inputs[value.name] = rng.integers(0, 256, shape, np.uint8)
        else:
            inputs[value.name] = rng.standard_normal(shape, np.float32)
    return inputs


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def worker(path: Path) -> None:
    """Serve timing requests on stdin (one JSON line each: threads, runs), answer on stdout."""
    sessions: dict[int, tuple[ort.InferenceSession, dict]] = {}
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        threads, runs = (json.loads(line)[k] for k in ("threads", "runs"))
        if threads not in sessions:
            session = ort.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
            sessions[threads] = session, feed(session, rng)
            for _ in range(WARMUP_FIRST):
                session.run(None, sessions[threads][1])
        session, inputs = sessions[threads]
        for _ in range(WARMUP_TURN):
            session.run(None, inputs)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, inputs)
            samples.append((time.perf_counter() - start) * 1e3)
        print(json.dumps({"ms": samples, "rss_mib": rss_mib()}), flush=True)


class Worker:
    """A worker process for one model file."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def time(self, threads: int, runs: int) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"threads": threads, "runs": runs}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker {self.process.args} died (exit {self.process.wait()})")
        return json.loads(answer)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def measure(
    models: list[Model], threads: list[int], rounds: int, runs: int, seed: int = 0
) -> dict[str, Any]:
    """Latency samples per (model, threads), all models interleaved round by round."""
    order = random.Random(seed)
    load_before = os.getloadavg()
    workers = {m.name: Worker(m.path) for m in models}
    samples: dict[str, dict[int, list[float]]] = {m.name: {t: [] for t in threads} for m in models}
    rss: dict[str, float] = {}
    try:
        for _ in range(rounds):
            turns = [(m.name, t) for m in models for t in threads]
            order.shuffle(turns)
            for name, t in turns:
                answer = workers[name].time(t, runs)
                samples[name][t] += answer["ms"]
                if t == min(threads):  # one session of the fewest threads: the model's memory
                    rss[name] = answer["rss_mib"]
                time.sleep(PAUSE_S)
    finally:
        for w in workers.values():
            w.close()
    return {
        "samples": samples,
        "rss_mib": rss,
        "rounds": rounds,
        "runs": runs,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


# --- aggregation ----------------------------------------------------------------------------


def latency_stats(values: list[float]) -> dict[str, float]:
    q1, median, q3, p90 = np.percentile(values, [25, 50, 75, 90])
    return {
        "median_ms": float(median),
        "p90_ms": float(p90),
        "iqr_ms": float(q3 - q1),
        "samples": len(values),
        "fps": 1e3 / float(median),
    }


def summarize(
    models: list[Model], measured: dict[str, Any], threads: list[int], bundle: str
) -> dict[str, Any]:
    """One row per model and thread count: latency, GFLOP/s against the peak, ratios to CLIP."""
    stats = {
        name: {t: latency_stats(values) for t, values in per_threads.items()}
        for name, per_threads in measured["samples"].items()
    }
    peaks: dict[int, dict[str, float]] = {}
    clip_int8: dict[int, str] = {}
    rows = []
    for t in threads:
        peaks[t] = {}
        for m in (m for m in models if m.family == "matmul_peak"):
            speed = m.flops / 1e6 / stats[m.name][t]["median_ms"]
            peaks[t][m.precision] = max(speed, peaks[t].get(m.precision, 0.0))
        clip_fp32 = stats[f"{CLIP}/fp32"][t]["median_ms"]
        int8 = [m.name for m in models if m.family == CLIP and m.precision == "int8"]
        clip_int8[t] = min(int8, key=lambda name: stats[name][t]["median_ms"])
        for m in models:
            if m.family == "matmul_peak":
                continue
            row: dict[str, Any] = {"model": m.family, "variant": m.variant, "threads": t}
            row |= stats[m.name][t]
            row["rss_mib"] = measured["rss_mib"].get(m.name)
            if m.flops:
                row["gflops"] = m.flops / 1e9
                row["gflop_per_s"] = m.flops / 1e6 / row["median_ms"]
                row["share_of_peak"] = row["gflop_per_s"] / peaks[t][m.precision]
            row["vs_clip_fp32"] = clip_fp32 / row["median_ms"]
            row["vs_clip_int8"] = stats[clip_int8[t]][t]["median_ms"] / row["median_ms"]
            rows.append(row)
    return {
        "rows": rows,
        "worker_baseline_rss_mib": min(
            rss for name, rss in measured["rss_mib"].items() if name.startswith("matmul_peak/")
        ),
        "peak_gflop_per_s": peaks,
        "clip_int8_fastest": clip_int8,
        "targets": check_targets(rows, bundle),
    }


def check_targets(rows: list[dict[str, Any]], bundle: str) -> list[dict[str, Any]]:
    """TARGETS for the bundle's shipped INT8 student, and (for reference: what a default
    bundle with that backbone would score) for every other student's fastest INT8 mode."""
    results = []
    for t in sorted({row["threads"] for row in rows}):
        int8 = [
            r for r in rows if r["threads"] == t and r["model"] != CLIP and r["variant"] != "fp32"
        ]
        chosen = [r for r in int8 if (r["model"], r["variant"]) == (bundle, "shipped_int8")]
        for family in dict.fromkeys(r["model"] for r in int8 if r["model"] != bundle):
            family_rows = (r for r in int8 if r["model"] == family)
            chosen.append(min(family_rows, key=lambda r: r["median_ms"]))
        for row in chosen:
            for key, goal in TARGETS.items():
                results.append(
                    {
                        "model": row["model"],
                        "variant": row["variant"],
                        "reference_only": row["model"] != bundle,
                        "against": key,
                        "goal": goal,
                        "threads": t,
                        "achieved": row[key],
                        "met": row[key] >= goal,
                        "margin": row[key] / goal,
                    }
                )
    return results


# --- reports --------------------------------------------------------------------------------


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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next(line for line in cpuinfo if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument(
        "--video", type=Path, default=REPO.parent / "shared/data/video/solidWhiteRight.mp4"
    )
    parser.add_argument(
        "--students", nargs="*", default=["efficientnet_b3", "mobilenetv3_large_100", "resnet10t"]
    )
    parser.add_argument(
        "--modes", nargs="+", default=["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8", "dynamic_u8"]
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per turn")
    parser.add_argument("--calibration-frames", type=int, default=16)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default="model_speed", help="file name of the results")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    logging.disable(logging.WARNING)  # the quantizer warns per tensor about LayerNorm axes
    models = build_models(args)
    measured = measure(models, args.threads, args.rounds, args.runs)
    command = " ".join(["python", "bench/model_speed.py", *sys.argv[1:]])
    bundle = load_bundle(args.model).manifest.name
    report = make_report(models, measured, args.threads, bundle, command)
    write_report(report, args.out, args.name)
    print(markdown(report))


def make_report(
    models: list[Model], measured: dict[str, Any], threads: list[int], bundle: str, command: str
) -> dict[str, Any]:
    return {
        "command": command,
        "run": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "threads": threads,
            "rounds": measured["rounds"],
            "runs": measured["runs"],
            "load_before": measured["load_before"],
            "load_after": measured["load_after"],
        },
        "models": [asdict(m) | {"path": str(m.path)} for m in models],
        **summarize(models, measured, threads, bundle),
        "samples_ms": measured["samples"],
    }


def write_report(report: dict[str, Any], out: Path, name: str) -> None:
    """`name`.json (everything, samples included), `name`.md and `name`.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    plot(report, out / f"{name}.png")


if __name__ == "__main__":
    main()
