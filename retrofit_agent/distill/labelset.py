"""A label set (contract 2, retrofit_agent.bundle.labelset) into labels.npz by the teacher.

Every prompt of a label is encoded by the teacher's text tower; the normalised text embeddings
are averaged and renormalised (prompt ensembling, as open_clip's zero-shot classifiers do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from retrofit_agent.bundle.labelset import LabelSet


def ensemble(
    prompts: Sequence[str], embed_texts: Callable[[list[str]], torch.Tensor]
) -> np.ndarray:
    """Mean of the prompts' normalised text embeddings, renormalised."""
    embeddings = embed_texts(list(prompts))
    mean = embeddings.mean(dim=0)
    return (mean / mean.norm()).cpu().numpy()


def build_label_bank(
    label_set: LabelSet, embed_texts: Callable[[list[str]], torch.Tensor], path: Path
) -> None:
    """Encode every label's prompts with the teacher's text tower and write labels.npz."""
    embeddings = [ensemble(prompts, embed_texts) for _, _, prompts, _ in label_set.entries()]
    label_set.save_bank(np.stack(embeddings), path)
