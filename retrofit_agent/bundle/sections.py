"""The typed sections of a bundle manifest: where the student came from and how good it is.

The teacher is an open_clip model (architecture plus a pretrained tag, or the sha256 of a local
checkpoint and of its model-config JSON) or `none`: a student with random weights, whose labels
mean nothing (the test and benchmark bundles); the command line warns about those. The
quantization section names the INT8 mode shipped; metrics are what the distillation measured.
Also the evaluation summary's types, which the distillation's eval report extends.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from retrofit_agent.common.strict import StrictModel

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256, lowercase hex")]
# onnxruntime's INT8 forms (retrofit_agent.distill.quantize.MODES): QDQ or QOperator static
# quantization with uint8 or int8 activations and int8 weights, or dynamic quantization
QuantMode = Literal["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8", "dynamic_u8"]


class OpenClipTeacher(StrictModel):
    """An open_clip model: `architecture` with a `pretrained` tag, or a local checkpoint
    (`checkpoint_sha256`, with `config_json_sha256` when the architecture is a custom one)."""

    kind: Literal["open_clip"] = "open_clip"
    architecture: str = Field(min_length=1)
    pretrained: str | None = Field(None, min_length=1)
    checkpoint_sha256: Sha256 | None = None
    config_json_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _one_source_of_weights(self) -> OpenClipTeacher:
        if (self.pretrained is None) == (self.checkpoint_sha256 is None):
            raise ValueError("give exactly one of pretrained and checkpoint_sha256")
        return self


class NoTeacher(StrictModel):
    """No teacher: the student has random weights, so its labels are meaningless."""

    kind: Literal["none"] = "none"
    note: str = "random weights: the labels are meaningless"


TeacherIdentity = Annotated[OpenClipTeacher | NoTeacher, Field(discriminator="kind")]


class StudentInfo(StrictModel):
    """What the student is. `architecture` is one line for a person; `backbone` and
    `head_hidden` are the timm backbone and projection-head widths of a timm student."""

    architecture: str = Field(min_length=1)
    params: PositiveInt | None = Field(None, description="parameter count; None: not counted")
    backbone: str | None = Field(None, description="timm model name")
    head_hidden: list[PositiveInt] | None = Field(None, description="[] is a linear head")
    built_by: str | None = Field(None, description="the tool that made a random-weight student")


class Latency(StrictModel):
    """Median single-frame latency measured when the INT8 mode was chosen, one run for both."""

    fp32: PositiveFloat
    int8: PositiveFloat


class Quantization(StrictModel):
    """The INT8 model shipped as student.int8.onnx: its mode, and why it was chosen."""

    mode: QuantMode
    per_channel: bool
    calibration: str = Field(min_length=1, description="what the calibration frames were")
    excluded_op_types: list[str] = Field([], description="op types left in FP32")
    excluded_nodes: list[str] = Field([], description="nodes left in FP32")
    selected_because: str | None = None
    latency_ms: Latency | None = None


class Top1(StrictModel):
    """Zero-shot top-1 accuracy of the teacher and of both students (as deployed: ONNX)."""

    teacher: float = Field(ge=0, le=1)
    student_fp32: float = Field(ge=0, le=1)
    student_int8: float = Field(ge=0, le=1)


class Retention(StrictModel):
    """Accuracy ratios; None where the denominator is 0."""

    student_fp32: float | None = Field(description="student FP32 / teacher")
    student_int8: float | None = Field(description="student INT8 / teacher")
    int8_vs_fp32: float | None = Field(description="student INT8 / student FP32")


class CosineStats(StrictModel):
    mean: float
    min: float
    p5: float
    p50: float


class Cosines(StrictModel):
    """Per-image embedding cosine similarities, summarised."""

    student_fp32_vs_teacher: CosineStats
    student_int8_vs_teacher: CosineStats
    int8_vs_fp32: CosineStats


class EvalSummary(StrictModel):
    """Zero-shot evaluation on a labelled folder (one sub-folder per class)."""

    folder: str
    images: PositiveInt
    chance: float = Field(gt=0, le=1)
    top1: Top1
    retention: Retention
    cosine: Cosines


class Metrics(StrictModel):
    """What the distillation measured on the shipped files."""

    export_max_abs_diff: float = Field(ge=0, description="torch vs ONNX FP32 on real frames")
    int8_vs_fp32_cosine: float = Field(description="mean embedding cosine, INT8 vs FP32")
    int8_top1_label_agreement: float | None = Field(
        description="share of (frame, group) pairs with the same best label; None: no label bank"
    )
    eval: EvalSummary | None = None
