import pytest

pytest.importorskip("onnxruntime.quantization", reason="needs onnx")
pytest.importorskip("torch", reason="needs the [distill] extra")

import numpy as np

from retrofit_agent.bundle.labels import load_label_bank
from retrofit_agent.distill.config import QuantizeConfig
from retrofit_agent.distill.quantize import quantize
from retrofit_agent.errors import BundleError


def frames(count, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (count, 3, 64, 64)).astype(np.float32)


def config(**change):
    return QuantizeConfig(**{"latency_runs": 3, **change})


def test_report_holds_every_mode_and_the_selected_model_runs(tiny_bundle, tmp_path):
    out = tmp_path / "int8.onnx"
    bank = load_label_bank(tiny_bundle / "labels.npz")
    report = quantize(
        tiny_bundle / "student.fp32.onnx",
        out,
        frames(8),
        frames(6, 1),
        config(modes=["qdq_u8s8", "qdq_s8s8", "dynamic_u8"]),
        bank,
    )
    assert [v.mode for v in report.variants] == ["qdq_u8s8", "qdq_s8s8", "dynamic_u8"]
    for v in report.variants:
        assert v.latency_ms > 0 and 0 < v.cosine_mean <= 1.0001
        assert v.top1_agreement is not None and 0 <= v.top1_agreement <= 1
    chosen = next(v for v in report.variants if v.mode == report.selected)
    passing = [v for v in report.variants if v.meets_bar]
    assert chosen.latency_ms == min(v.latency_ms for v in passing)
    assert report.selected in report.reason or "fastest" in report.reason
    from retrofit_agent.distill.export import onnx_embeddings

    assert onnx_embeddings(out, frames(2)).shape == (2, 32)


def test_no_mode_meeting_the_bar_fails_unless_fallback(tiny_bundle, tmp_path):
    fp32 = tiny_bundle / "student.fp32.onnx"
    strict = config(modes=["qdq_u8s8"], min_cosine=0.9999999)
    with pytest.raises(BundleError, match="no INT8 mode reaches mean cosine 0.9999999"):
        quantize(fp32, tmp_path / "a.onnx", frames(4), frames(4, 1), strict)
    report = quantize(
        fp32,
        tmp_path / "b.onnx",
        frames(4),
        frames(4, 1),
        config(modes=["qdq_u8s8"], min_cosine=0.9999999, fallback="best"),
    )
    assert report.selected == "qdq_u8s8" and "fallback" in report.reason


def test_excluding_op_types_and_unknown_nodes(tiny_bundle, tmp_path):
    fp32 = tiny_bundle / "student.fp32.onnx"
    report = quantize(
        fp32,
        tmp_path / "c.onnx",
        frames(4),
        frames(4, 1),
        config(modes=["qdq_u8s8"], exclude_op_types=["Conv"]),
    )
    assert report.excluded_op_types == ["Conv"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "c.onnx")).graph.node}
    assert "Conv" in ops and "QLinearConv" not in ops  # convolutions stayed in FP32
    with pytest.raises(BundleError, match="no such nodes"):
        quantize(
            fp32,
            tmp_path / "d.onnx",
            frames(4),
            frames(4, 1),
            config(modes=["qdq_u8s8"], exclude_nodes=["not_a_node"]),
        )
