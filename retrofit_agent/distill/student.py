"""The student: any timm backbone plus an MLP projection head into the teacher's embedding space."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from retrofit_agent.errors import ConfigError, one_line


def projection_head(
    features: int, hidden: Sequence[int], dim: int, dropout: float
) -> nn.Sequential:
    """Linear -> GELU -> Dropout per hidden size, then a linear map to `dim`."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features, width), nn.GELU(), nn.Dropout(dropout)]
        features = width
    layers.append(nn.Linear(features, dim))
    return nn.Sequential(*layers)


def describe_head(hidden: Sequence[int]) -> str:
    """What a projection head is, for manifests and reports: "linear" or "MLP [512]"."""
    return f"MLP {list(hidden)}" if hidden else "linear"


class Student(nn.Module):
    """Image [N,3,H,W] (normalised RGB) -> L2-normalised embedding [N, dim]."""

    def __init__(
        self,
        backbone: str,
        dim: int,
        hidden: Sequence[int] = (1024,),
        dropout: float = 0.1,
        backbone_weights: Path | None = None,
    ) -> None:
        super().__init__()
        if backbone not in timm.list_models():
            raise ConfigError(f"student.backbone: {backbone!r} is not a timm model name")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0)
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        # timm's pooled output width: head_hidden_size when the net has a conv head (MobileNetV3)
        features = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = projection_head(features, hidden, dim, dropout)
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=-1)


def load_backbone_weights(backbone: nn.Module, path: Path) -> None:
    """Local backbone weights (e.g. ImageNet), ignoring a classifier the student does not have."""
    if not Path(path).is_file():
        raise ConfigError(f"student.backbone_weights: {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        missing, _ = backbone.load_state_dict(state, strict=False)
    except Exception as exc:  # unpickling errors, size mismatches: all mean wrong weights
        raise ConfigError(f"student.backbone_weights: {path}: {one_line(exc)}") from None
    if missing:
        raise ConfigError(
            f"student.backbone_weights: {path}: {len(missing)} backbone tensors missing, "
            f"e.g. {missing[0]} (weights for another architecture?)"
        )


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
