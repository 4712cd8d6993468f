"""Model speed, measured as bench/model_speed.py does it: FLOPs, a matmul peak, worker
processes taking turns, and the aggregation into the report's rows and targets.

Every model runs in its own worker process (`python -m retrofit_agent.distill.speed MODEL`),
with one onnxruntime session per thread count set up as the agent's
(retrofit_agent.frames.embedder.session_options). The workers take turns: each round visits
every model at every thread count in a fresh random order, so drift on a shared machine
(other users, throttling) spreads over all models alike. Per model and thread count: median
and p90 latency, FPS, achieved GFLOP/s (2 x the multiply-adds of the Conv, MatMul and Gemm
nodes, over the median) against a matmul peak timed the same way (an onnxruntime MatMul in
FP32 and a U8S8 MatMulInteger), and the speed ratios over the CLIP tower. The benchmark's
students are also written as bundles (`write_student_bundle`) for `retrofit-agent bench`.

Offline (it needs onnx); the report's text and plot are in speed_report.
"""

from __future__ import annotations

import json
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
    Bundle,
    Description,
    Resize,
)
from retrofit_agent.bundle.sections import NoTeacher, Quantization, QuantMode, StudentInfo
from retrofit_agent.bundle.writer import write_bundle
from retrofit_agent.distill.config import QuantizeConfig
from retrofit_agent.frames.embedder import session_options

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
STUDENT_MODE: QuantMode = "qdq_u8s8"  # the speed students' bundles ship this mode if built


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


# --- FLOPs -----------------------------------------------------------------------------------


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


# --- the matmul peak -------------------------------------------------------------------------


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


# --- the speed students as bundles -----------------------------------------------------------


def write_student_bundle(
    out: Path,
    backbone: str,
    size: int,
    fp32: Path,
    variants: dict[QuantMode, Path],
    calibration: str,
    labels_of: Bundle,
) -> Bundle:
    """A random-weight student (`backbone` + MLP head [1024] at `size` px) as a model bundle
    with the label bank of `labels_of`, for `retrofit-agent bench --model`; replaces `out`.
    `variants` were built with the quantizer's default settings (QuantizeConfig())."""
    mode = STUDENT_MODE if STUDENT_MODE in variants else next(iter(variants))
    description = Description(
        name=f"bench-{backbone}",
        teacher=NoTeacher(),
        student=StudentInfo(
            architecture=f"{backbone} + MLP [1024] head -> {labels_of.manifest.embedding_dim}",
            backbone=backbone,
            head_hidden=[1024],
            built_by="bench/model_speed.py",
        ),
        size=size,
        resize=Resize(shortest_side=size, interpolation="bicubic"),
        mean=CLIP_MEAN,
        std=CLIP_STD,
        embedding_dim=labels_of.manifest.embedding_dim,
        logit_scale=labels_of.manifest.logit_scale,
        quantization=Quantization(
            mode=mode, per_channel=QuantizeConfig().per_channel, calibration=calibration
        ),
    )
    files = {STUDENT_FP32: fp32, STUDENT_INT8: variants[mode], LABELS: labels_of.labels_path}
    if out.is_dir():
        shutil.rmtree(out)
    return write_bundle(out, description, files)


# --- timing: one worker process per model ----------------------------------------------------


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
            [sys.executable, "-m", "retrofit_agent.distill.speed", str(path)],
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


# --- aggregation -----------------------------------------------------------------------------


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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next(line for line in cpuinfo if line.startswith("model name"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
