"""The reports the offline steps leave in the run directory: export.json, quantize.json, eval.json.

Each is a strict model, written whole or not at all (a step interrupted while writing leaves no
report, so `all` runs it again) and read back by validation: the bundle step and the
benchmarks read typed fields, and a report from another version of this code fails with the
file and the key instead of a KeyError. The eval report extends the manifest's evaluation
summary (retrofit_agent.bundle.sections.EvalSummary) with the per-class detail.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from retrofit_agent.bundle.sections import EvalSummary, Latency, Quantization, QuantMode, Top1
from retrofit_agent.common.files import atomic_write
from retrofit_agent.common.strict import StrictModel, first_error
from retrofit_agent.distill.config import Calibration
from retrofit_agent.errors import BundleError, ConfigError

EXPORT_REPORT = "export.json"
QUANTIZE_REPORT = "quantize.json"
EVAL_REPORT = "eval.json"
R = TypeVar("R", bound=StrictModel)


class ExportReport(StrictModel):
    """Torch against onnxruntime on the same cached frames."""

    frames: PositiveInt
    max_abs_diff: NonNegativeFloat
    bound: PositiveFloat


class Variant(StrictModel):
    """One INT8 mode, measured against FP32 on the fidelity frames."""

    mode: QuantMode
    latency_ms: PositiveFloat = Field(description="median, timed interleaved with FP32")
    speedup_vs_fp32: PositiveFloat
    cosine_mean: float
    cosine_min: float
    top1_agreement: float | None = Field(description="None: no label bank to compare with")
    size_bytes: PositiveInt
    meets_bar: bool = Field(description="cosine_mean >= min_cosine")


class FailedVariant(StrictModel):
    """A mode the quantizer could not build for this graph."""

    mode: QuantMode
    error: str


class QuantizeReport(StrictModel):
    fp32_latency_ms: PositiveFloat
    fp32_size_bytes: PositiveInt
    threads: PositiveInt
    calibration_frames: PositiveInt
    fidelity_frames: PositiveInt
    method: Calibration
    per_channel: bool
    excluded_op_types: list[str]
    excluded_nodes: list[str]
    min_cosine: float
    variants: list[Variant] = Field(min_length=1)
    failed: list[FailedVariant] = Field([], description="modes the quantizer could not build")
    selected: QuantMode
    reason: str

    @model_validator(mode="after")
    def _selected_was_measured(self) -> QuantizeReport:
        if self.selected not in {v.mode for v in self.variants}:
            raise ValueError(f"selected mode {self.selected} is not among the variants")
        return self

    @property
    def chosen(self) -> Variant:
        """The variant shipped as student.int8.onnx."""
        return next(v for v in self.variants if v.mode == self.selected)

    def section(self) -> Quantization:
        """The manifest's quantization section."""
        return Quantization(
            mode=self.selected,
            per_channel=self.per_channel,
            calibration=f"{self.calibration_frames} training frames, {self.method}",
            excluded_op_types=self.excluded_op_types,
            excluded_nodes=self.excluded_nodes,
            selected_because=self.reason,
            latency_ms=Latency(fp32=self.fp32_latency_ms, int8=self.chosen.latency_ms),
        )


class EvalReport(EvalSummary):
    """The manifest's evaluation summary plus the classes, the prompts and per-class top-1."""

    classes: list[str] = Field(min_length=1)
    templates: list[str] = Field(min_length=1)
    per_class: dict[str, Top1] = Field(description="classes with images only")

    def summary(self) -> EvalSummary:
        return EvalSummary.model_validate({k: getattr(self, k) for k in EvalSummary.model_fields})


def write_report(path: Path, report: StrictModel) -> None:
    atomic_write(path, report.model_dump_json(indent=2) + "\n")


def read_report(path: Path, model: type[R]) -> R:
    """A report written by `write_report`; ConfigError when missing, BundleError when invalid,
    each naming the file (and the key)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (run the step that writes it first)") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: {first_error(exc)} (run its step again)") from None
