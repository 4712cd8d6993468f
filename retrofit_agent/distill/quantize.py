"""INT8 static quantization with onnxruntime: try several modes, measure, ship the best.

On this CPU class the obvious default can lose: S8S8 QDQ made EfficientNet 3x slower than FP32,
and EfficientNet's SiLU and squeeze-excite lose accuracy in INT8 (onnxruntime issue #11415).
So every configured mode is built, calibrated on real frames, timed against FP32 in the same
run (interleaved, so machine drift hits all alike) and compared with FP32 on real frames
(embedding cosine, top-1 agreement per label group). The fastest mode whose mean cosine meets
the bar is selected, and the report says why.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from retrofit_agent.bundle.labels import LabelBank
from retrofit_agent.bundle.sections import QuantMode
from retrofit_agent.distill.config import QuantizeConfig
from retrofit_agent.distill.export import onnx_embeddings, ort_session
from retrofit_agent.distill.reports import FailedVariant, QuantizeReport, Variant
from retrofit_agent.errors import BundleError, one_line
from retrofit_agent.frames.embedder import INPUT_NAME, OUTPUT_NAME

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# mode -> (format, activation type, weight type); None format means dynamic quantization
MODES = {
    "qdq_u8s8": (QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8),
    "qdq_s8s8": (QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8),
    "qoperator_u8s8": (QuantFormat.QOperator, QuantType.QUInt8, QuantType.QInt8),
    "dynamic_u8": (None, QuantType.QUInt8, QuantType.QUInt8),
}


class _Frames(CalibrationDataReader):
    def __init__(self, inputs: np.ndarray) -> None:
        self._rows = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        return None if row is None else {INPUT_NAME: row[None]}


def excluded_nodes(model_path: Path, op_types: Sequence[str], names: Sequence[str]) -> list[str]:
    """Node names left in FP32: every node of the excluded op types plus the named ones."""
    graph = onnx.load(str(model_path)).graph
    known = {node.name for node in graph.node}
    unknown = sorted(set(names) - known)
    if unknown:
        raise BundleError(f"quantize.exclude_nodes: no such nodes in {model_path}: {unknown}")
    return sorted({n.name for n in graph.node if n.op_type in op_types} | set(names))


def build_variant(
    prepared: Path, out: Path, mode: QuantMode, calibration: np.ndarray, config: QuantizeConfig
) -> None:
    quant_format, activations, weights = MODES[mode]
    exclude = excluded_nodes(prepared, config.exclude_op_types, config.exclude_nodes)
    if quant_format is None:
        quantize_dynamic(
            str(prepared),
            str(out),
            weight_type=weights,
            per_channel=config.per_channel,
            nodes_to_exclude=exclude,
        )
        return
    quantize_static(
        str(prepared),
        str(out),
        _Frames(calibration),
        quant_format=quant_format,
        activation_type=activations,
        weight_type=weights,
        per_channel=config.per_channel,
        nodes_to_exclude=exclude,
        calibrate_method=METHODS[config.method],
    )


def build_variants(
    fp32: Path, work: Path, calibration: np.ndarray, config: QuantizeConfig
) -> tuple[dict[QuantMode, Path], list[FailedVariant]]:
    """Every mode of `config.modes` as `work/<mode>.onnx`, from one shape-inferred FP32 graph,
    and the modes that failed (with the error); BundleError if all did."""
    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(fp32), str(prepared))
    except Exception:  # symbolic shape inference gives up on some graphs (ViT reshapes)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    variants, failed = {}, []
    for mode in config.modes:
        try:
            build_variant(prepared, work / f"{mode}.onnx", mode, calibration, config)
            variants[mode] = work / f"{mode}.onnx"
        except Exception as exc:  # the quantizer fails on some graphs; other modes may not
            failed.append(FailedVariant(mode=mode, error=one_line(exc)))
    if not variants:
        raise BundleError(f"every quantization mode failed: {failed}")
    return variants, failed


def interleaved_latency_ms(
    models: dict[str, Path], frame: np.ndarray | dict[str, np.ndarray], runs: int, threads: int
) -> dict[str, float]:
    """Median single-frame latency of each model, timed round-robin in one run.

    `frame` [3, S, S] is fed to every model, or give one per model name when sizes differ.
    """
    sessions = {name: ort_session(path, threads) for name, path in models.items()}
    feeds = {
        name: {INPUT_NAME: (frame[name] if isinstance(frame, dict) else frame)[None]}
        for name in models
    }
    for name, session in sessions.items():
        for _ in range(3):  # warm-up: first runs allocate and pick kernels
            session.run([OUTPUT_NAME], feeds[name])
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run([OUTPUT_NAME], feeds[name])
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def top1_agreement(a: np.ndarray, b: np.ndarray, bank: LabelBank | None) -> float | None:
    """Share of (frame, group) pairs whose best label is the same for both embedding sets."""
    if bank is None:
        return None
    sims_a, sims_b = a @ bank.embeddings.T, b @ bank.embeddings.T
    same = [
        sims_a[:, g.index].argmax(axis=1) == sims_b[:, g.index].argmax(axis=1) for g in bank.groups
    ]
    return float(np.mean(same))


def quantize(
    fp32: Path,
    out: Path,
    calibration: np.ndarray,
    fidelity_inputs: np.ndarray,
    config: QuantizeConfig,
    bank: LabelBank | None = None,
) -> QuantizeReport:
    """Build every mode, measure it, copy the selected one to `out`; returns the report."""
    with tempfile.TemporaryDirectory(prefix="retrofit-quantize-") as tmp:
        variants, failed = build_variants(fp32, Path(tmp), calibration, config)
        latency = interleaved_latency_ms(
            {"fp32": fp32, **variants}, fidelity_inputs[0], config.latency_runs, config.threads
        )
        reference = onnx_embeddings(fp32, fidelity_inputs, config.threads)
        rows = []
        for mode, path in variants.items():
            emb = onnx_embeddings(path, fidelity_inputs, config.threads)
            cosine = (emb * reference).sum(axis=1)
            rows.append(
                Variant(
                    mode=mode,
                    latency_ms=latency[mode],
                    speedup_vs_fp32=latency["fp32"] / latency[mode],
                    cosine_mean=float(cosine.mean()),
                    cosine_min=float(cosine.min()),
                    top1_agreement=top1_agreement(emb, reference, bank),
                    size_bytes=path.stat().st_size,
                    meets_bar=bool(cosine.mean() >= config.min_cosine),
                )
            )
        selected, reason = _select(rows, config)
        shutil.copyfile(variants[selected.mode], out)
    return QuantizeReport(
        fp32_latency_ms=latency["fp32"],
        fp32_size_bytes=fp32.stat().st_size,
        threads=config.threads,
        calibration_frames=len(calibration),
        fidelity_frames=len(fidelity_inputs),
        method=config.method,
        per_channel=config.per_channel,
        excluded_op_types=config.exclude_op_types,
        excluded_nodes=config.exclude_nodes,
        min_cosine=config.min_cosine,
        variants=rows,
        failed=failed,
        selected=selected.mode,
        reason=reason,
    )


def _select(rows: list[Variant], config: QuantizeConfig) -> tuple[Variant, str]:
    passing = [r for r in rows if r.meets_bar]
    if passing:
        best = min(passing, key=lambda r: r.latency_ms)
        return best, (
            f"fastest of {len(passing)} mode(s) with mean cosine >= {config.min_cosine} "
            f"({best.latency_ms:.2f} ms, {best.speedup_vs_fp32:.2f}x FP32, "
            f"cosine {best.cosine_mean:.4f})"
        )
    summary = ", ".join(f"{r.mode} {r.cosine_mean:.4f}" for r in rows)
    if config.fallback == "fail":
        raise BundleError(
            f"no INT8 mode reaches mean cosine {config.min_cosine} against FP32 ({summary}); "
            "exclude op types or nodes (quantize.exclude_op_types), or set fallback = 'best'"
        )
    best = max(rows, key=lambda r: r.cosine_mean)
    return best, f"no mode met cosine {config.min_cosine} ({summary}); fallback: most faithful"
