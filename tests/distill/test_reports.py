"""The run directory's reports: written whole, read back typed, refused with file and key."""

import json

import pytest

from retrofit_agent.bundle.sections import Cosines, CosineStats, Retention, Top1
from retrofit_agent.distill.reports import (
    EvalReport,
    ExportReport,
    FailedVariant,
    QuantizeReport,
    Variant,
    read_report,
    write_report,
)
from retrofit_agent.errors import BundleError, ConfigError


def variant(mode, latency_ms, cosine_mean):
    return Variant(
        mode=mode,
        latency_ms=latency_ms,
        speedup_vs_fp32=4.0 / latency_ms,
        cosine_mean=cosine_mean,
        cosine_min=cosine_mean - 0.01,
        top1_agreement=None,
        size_bytes=1000,
        meets_bar=cosine_mean >= 0.99,
    )


QUANTIZE = QuantizeReport(
    fp32_latency_ms=4.0,
    fp32_size_bytes=4000,
    threads=1,
    calibration_frames=64,
    fidelity_frames=64,
    method="minmax",
    per_channel=True,
    excluded_op_types=[],
    excluded_nodes=[],
    min_cosine=0.99,
    variants=[variant("qdq_u8s8", 1.5, 0.995), variant("qoperator_u8s8", 1.0, 0.999)],
    failed=[FailedVariant(mode="qdq_s8s8", error="ShapeInferenceError: no shape")],
    selected="qoperator_u8s8",
    reason="fastest of 2 mode(s) with mean cosine >= 0.99",
)
TOP1 = Top1(teacher=0.5, student_fp32=0.4, student_int8=0.45)
STATS = CosineStats(mean=0.9, min=0.8, p5=0.85, p50=0.91)
EVAL = EvalReport(
    folder="/data/eval",
    images=12,
    chance=0.5,
    top1=TOP1,
    retention=Retention(student_fp32=0.8, student_int8=0.9, int8_vs_fp32=1.125),
    cosine=Cosines(
        student_fp32_vs_teacher=STATS, student_int8_vs_teacher=STATS, int8_vs_fp32=STATS
    ),
    classes=["curve", "straight"],
    templates=["a photo of a {} road."],
    per_class={"curve": TOP1, "straight": TOP1},
)


@pytest.mark.parametrize(
    "report", [ExportReport(frames=16, max_abs_diff=1e-7, bound=1e-4), QUANTIZE, EVAL]
)
def test_a_report_reads_back_as_it_was_written(tmp_path, report):
    path = tmp_path / "report.json"
    write_report(path, report)
    assert read_report(path, type(report)) == report
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, then renamed


def test_the_quantize_report_knows_what_it_shipped():
    assert QUANTIZE.chosen.latency_ms == 1.0
    section = QUANTIZE.section()
    assert section.mode == "qoperator_u8s8" and section.latency_ms.int8 == 1.0
    assert section.calibration == "64 training frames, minmax"
    assert EVAL.summary().top1 == TOP1 and not hasattr(EVAL.summary(), "per_class")


def test_a_missing_report_says_which_step_writes_it(tmp_path):
    with pytest.raises(ConfigError, match=r"quantize\.json: missing \(run the step"):
        read_report(tmp_path / "quantize.json", QuantizeReport)


def test_a_report_of_another_shape_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "quantize.json"
    data = QUANTIZE.model_dump(mode="json")
    del data["variants"][0]["latency_ms"]
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"quantize\.json: variants\.0\.latency_ms: Field requ"):
        read_report(path, QuantizeReport)
    data = QUANTIZE.model_dump(mode="json") | {"selected": "dynamic_u8"}
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"selected mode dynamic_u8 is not among the variants"):
        read_report(path, QuantizeReport)
