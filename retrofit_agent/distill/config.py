"""The distillation run configuration: strict pydantic sections loaded from a TOML file.

Validated like the agent's config (unknown keys are errors naming the file and key), so a run on
a GPU cluster fails at start, not after hours, when a key is misspelt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from retrofit_agent.bundle.sections import QuantMode
from retrofit_agent.common.settings import load_validated
from retrofit_agent.common.strict import StrictModel


class TeacherConfig(StrictModel):
    """An open_clip model: by name + pretrained tag, or name + local checkpoint file.

    `config_json` registers a custom architecture from an open_clip model-config JSON (how the
    small teachers in this project are made); its file name without .json is the architecture.
    """

    architecture: str = "ViT-B-32"
    pretrained: str | None = Field("openai", description="open_clip pretrained tag")
    checkpoint: Path | None = Field(None, description="local weights instead of a tag")
    config_json: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_source_of_weights(cls, data: Any) -> Any:
        """A local checkpoint replaces the pretrained tag (whose default is "openai")."""
        if isinstance(data, dict) and data.get("checkpoint") is not None:
            return {**data, "pretrained": None}
        return data


class StudentConfig(StrictModel):
    """A timm backbone (any registered name) plus an MLP projection head."""

    backbone: str = "efficientnet_b3"
    backbone_weights: Path | None = None
    hidden: list[PositiveInt] = Field([1024], description="MLP head widths; [] is linear")
    dropout: float = Field(0.1, ge=0, lt=1)
    image_size: PositiveInt = 224
    shortest_side: PositiveInt | None = Field(None, description="default: image_size")
    interpolation: Literal["bilinear", "bicubic", "area"] = "bicubic"


class DataConfig(StrictModel):
    """Unlabelled images (folders, searched recursively) and frames sampled from videos."""

    images: list[Path] = Field([], description="folders of images")
    videos: list[Path] = Field([], description="video files")
    video_stride: PositiveInt = Field(10, description="every Nth frame of each video")
    cache_dir: Path | None = Field(None, description="default: <out_dir>/cache")
    color_jitter: float = Field(0.2, ge=0, le=1, description="brightness/contrast/saturation")
    flip: bool = Field(False, description="horizontal flips (the teacher saw the unflipped view)")


class LossConfig(StrictModel):
    """Weights (0 switches a loss off) and the settings of the three distillation losses."""

    feature: NonNegativeFloat = 1.0
    feature_kind: Literal["cosine", "mse"] = "cosine"
    contrastive: NonNegativeFloat = 0.5
    contrastive_temperature: PositiveFloat = 0.07
    crossmodal: NonNegativeFloat = Field(0.0, description="needs prompts")
    crossmodal_temperature: PositiveFloat | None = Field(
        None, description="default: 1 / the teacher's logit scale"
    )
    prompts: list[str] = Field([], description="text bank; default: the label set's prompts")

    @model_validator(mode="after")
    def _something_to_learn(self) -> LossConfig:
        if self.feature + self.contrastive + self.crossmodal == 0:
            raise ValueError("all loss weights are 0")
        return self


class TrainConfig(StrictModel):
    steps: PositiveInt = 1000
    batch_size: PositiveInt = Field(64, description="per process")
    lr: PositiveFloat = 1e-3
    min_lr: NonNegativeFloat = 1e-5
    warmup_steps: int = Field(50, ge=0)
    weight_decay: NonNegativeFloat = 0.05
    grad_clip: NonNegativeFloat = Field(1.0, description="0 disables clipping")
    checkpoint_every: PositiveInt = 200
    log_every: PositiveInt = 10
    seed: int = 0
    amp: bool = Field(True, description="bfloat16 autocast on CUDA; ignored on CPU")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")


class ExportConfig(StrictModel):
    opset: int = Field(17, ge=13)
    parity_frames: PositiveInt = Field(16, description="cached frames compared torch vs ONNX")
    max_abs_diff: PositiveFloat = 1e-4


Calibration = Literal["minmax", "entropy", "percentile"]  # onnxruntime's calibration methods


class QuantizeConfig(StrictModel):
    """INT8 variants to try; the fastest one meeting `min_cosine` against FP32 is shipped."""

    modes: list[QuantMode] = Field(["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8"])
    calibration_frames: PositiveInt = 64
    method: Calibration = "minmax"
    per_channel: bool = True
    exclude_op_types: list[str] = Field([], description="left in FP32, e.g. ['Sigmoid', 'Mul']")
    exclude_nodes: list[str] = Field([], description="node names left in FP32")
    fidelity_frames: PositiveInt = Field(64, description="frames for cosine and label agreement")
    min_cosine: float = Field(0.99, gt=0, le=1, description="mean cosine to FP32 required")
    fallback: Literal["fail", "best"] = Field("fail", description="none passes: fail or ship best")
    threads: PositiveInt = Field(1, description="intra-op threads while timing (the agent's)")
    latency_runs: PositiveInt = 30


class LabelsConfig(StrictModel):
    label_set: Path | None = Field(None, description="label-set TOML (contract 2)")


class EvalConfig(StrictModel):
    """Zero-shot top-1 on a labelled folder: one sub-folder per class, its name the class."""

    folder: Path | None = None
    templates: list[str] = Field(["a photo of {}."], description="zero-shot prompts")


class BundleConfig(StrictModel):
    name: str = Field("student", min_length=1)
    path: Path | None = Field(None, description="default: <out_dir>/bundle")


class RunConfig(StrictModel):
    out_dir: Path = Path("runs/distill")
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    losses: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    labels: LabelsConfig = LabelsConfig()
    eval: EvalConfig = EvalConfig()
    bundle: BundleConfig = BundleConfig()

    @model_validator(mode="after")
    def _prompts_for_crossmodal(self) -> RunConfig:
        if self.losses.crossmodal and not (self.losses.prompts or self.labels.label_set):
            raise ValueError("the cross-modal loss needs losses.prompts or labels.label_set")
        return self

    @property
    def bundle_dir(self) -> Path:
        return self.bundle.path or self.out_dir / "bundle"

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or self.out_dir / "cache"


def load_run_config(path: Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a run config TOML with dotted-key overrides from the command line."""
    return load_validated(RunConfig, path, environ={}, overrides=overrides)
