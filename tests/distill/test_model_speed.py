"""Model speed (bench/model_speed.py): FLOP counting, worker processes, the aggregation and the
report, on tiny models."""

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="needs the [dev] extra")

from retrofit_agent.distill import speed, speed_report
from retrofit_agent.distill.speed import CLIP, Model

TINY_FLOPS = 2 * (32 * 32 * 8 * 3 * 9 + 16 * 16 * 16 * 8 * 9 + 16 * 32)  # bundle_factory's net


def test_flops_of_matmul_and_conv_graphs(tiny_bundle, tmp_path):
    peak = speed.matmul_peak(tmp_path / "peak.onnx", int8=True, size=64)
    assert speed.graph_flops(peak.path) == peak.flops == 2 * 64**3
    assert speed.graph_flops(tiny_bundle / "student.fp32.onnx") == TINY_FLOPS
    assert speed.graph_flops(tiny_bundle / "student.int8.onnx") == TINY_FLOPS  # QDQ


def tiny_models(bundle: Path, tmp_path: Path) -> list[Model]:
    """The tiny student standing in for every role: bundle, CLIP tower, matmul peaks."""
    fp32, int8 = bundle / "student.fp32.onnx", bundle / "student.int8.onnx"
    return [
        speed.matmul_peak(tmp_path / "fp32.onnx", int8=False, size=64),
        speed.matmul_peak(tmp_path / "int8.onnx", int8=True, size=64),
        Model("tiny-test", "fp32", fp32, TINY_FLOPS, "fp32"),
        Model("tiny-test", "shipped_int8", int8, TINY_FLOPS, "int8"),
        Model("other-student", "qdq_u8s8", int8, TINY_FLOPS, "int8"),
        Model(CLIP, "fp32", fp32, TINY_FLOPS, "fp32"),
        Model(CLIP, "qdq_u8s8", int8, TINY_FLOPS, "int8"),
    ]


def test_workers_interleave_and_the_report_aggregates(tiny_bundle, tmp_path):
    models = tiny_models(tiny_bundle, tmp_path)
    measured = speed.measure(models, threads=[1, 2], rounds=2, runs=3)
    assert all(len(per[t]) == 6 for per in measured["samples"].values() for t in (1, 2))
    assert all(v > 0 for per in measured["samples"].values() for t in per for v in per[t])
    assert set(measured["rss_mib"]) == {m.name for m in models}

    report = speed.make_report(models, measured, [1, 2], "tiny-test", "python bench/x")
    rows = {(r["model"], r["variant"], r["threads"]): r for r in report["rows"]}
    assert len(rows) == 5 * 2  # the peaks are not rows
    clip = rows[(CLIP, "fp32", 1)]
    assert clip["vs_clip_fp32"] == 1.0 and clip["gflops"] == TINY_FLOPS / 1e9
    shipped = rows[("tiny-test", "shipped_int8", 2)]
    assert shipped["vs_clip_fp32"] == pytest.approx(
        rows[(CLIP, "fp32", 2)]["median_ms"] / shipped["median_ms"]
    )
    assert shipped["share_of_peak"] > 0 and shipped["fps"] == pytest.approx(
        1e3 / shipped["median_ms"]
    )
    targets = [t for t in report["targets"] if not t["reference_only"]]
    assert [(t["threads"], t["against"]) for t in targets] == [
        (t, key) for t in (1, 2) for key in speed.TARGETS
    ]
    assert {t["model"] for t in report["targets"] if t["reference_only"]} == {"other-student"}
    for target in targets:
        row = rows[("tiny-test", "shipped_int8", target["threads"])]
        assert target["achieved"] == row[target["against"]]
        assert target["met"] == (target["margin"] >= 1)

    pytest.importorskip("matplotlib", reason="the plot needs the [distill] extra")
    speed_report.write_report(report, tmp_path / "out", "speed")
    assert json.loads((tmp_path / "out/speed.json").read_text())["command"] == "python bench/x"
    markdown = (tmp_path / "out/speed.md").read_text()
    assert "| tiny-test | shipped_int8 |" in markdown and "## 2 threads" in markdown
    assert "| tiny-test (the bundle) | shipped_int8 | 1 |" in markdown
    assert (tmp_path / "out/speed.png").stat().st_size > 0
