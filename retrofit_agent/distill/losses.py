"""The three distillation losses, each weighted and switchable (weight 0) to measure its effect.

All take L2-normalised embeddings: student `s` [B,D], teacher `t` [B,D], text bank `text` [L,D].
- feature: pull each student embedding onto its teacher embedding (CLIP-KD's strongest single
  loss), as 1 - cosine or as squared error.
- contrastive: InfoNCE between student and teacher embeddings in the batch (both directions):
  a student embedding must be closer to its own teacher embedding than to the others.
- cross-modal: KL(teacher || student) between image-to-text distributions over the text bank,
  which is what keeps zero-shot labels working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrofit_agent.distill.config import LossConfig


def feature_loss(s: torch.Tensor, t: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    if kind == "cosine":
        return (1 - (s * t).sum(dim=-1)).mean()
    return (s - t).pow(2).sum(dim=-1).mean()


def contrastive_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = s @ t.T / temperature
    targets = torch.arange(len(s), device=s.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def crossmodal_loss(
    s: torch.Tensor, t: torch.Tensor, text: torch.Tensor, temperature: float
) -> torch.Tensor:
    student_log_probs = F.log_softmax(s @ text.T / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(t @ text.T / temperature, dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)


class DistillLoss:
    """The weighted sum of the enabled losses, and each part for logging."""

    def __init__(
        self, config: LossConfig, text: torch.Tensor | None, teacher_logit_scale: float
    ) -> None:
        self.config = config
        self.text = text
        self.crossmodal_temperature = config.crossmodal_temperature or 1 / teacher_logit_scale

    def __call__(self, s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        parts: dict[str, torch.Tensor] = {}
        if c.feature:
            parts["feature"] = feature_loss(s, t, c.feature_kind)
        if c.contrastive:
            parts["contrastive"] = contrastive_loss(s, t, c.contrastive_temperature)
        if c.crossmodal:
            parts["crossmodal"] = crossmodal_loss(s, t, self.text, self.crossmodal_temperature)
        weights = {"feature": c.feature, "contrastive": c.contrastive, "crossmodal": c.crossmodal}
        total = sum(weights[name] * value for name, value in parts.items())
        return total, {name: float(value.detach()) for name, value in parts.items()}
