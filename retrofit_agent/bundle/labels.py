"""The label bank (labels.npz, built offline by the teacher's text tower) and embedding scoring.

Groups are `exclusive` (softmax over the group with the bundle's logit scale; the winner is a
label when its probability reaches its threshold) or `multi` (each label independently: cosine
similarity against its own threshold). The camera
never encodes text; it only takes dot products with these precomputed, L2-normalised rows.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrofit_agent.errors import BundleError

KINDS = ("exclusive", "multi")
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Score:
    group: str
    label: str
    score: float


@dataclass(frozen=True)
class Scored:
    """One frame's result: labels that passed their threshold and each group's best label."""

    labels: list[Score]
    top: dict[str, Score]


@dataclass(frozen=True)
class Group:
    name: str
    kind: str
    index: np.ndarray  # rows of the bank that belong to this group


class LabelBank:
    """Text embeddings [L, D] with per-label group and threshold."""

    def __init__(
        self,
        names: np.ndarray,
        groups: np.ndarray,
        embeddings: np.ndarray,
        thresholds: np.ndarray,
        group_names: np.ndarray,
        group_kinds: np.ndarray,
    ) -> None:
        self.names = [str(n) for n in names]
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        label_groups = np.asarray([str(g) for g in groups])
        self.groups = [
            Group(str(name), str(kind), np.flatnonzero(label_groups == str(name)))
            for name, kind in zip(group_names, group_kinds, strict=True)
        ]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.names)

    def score(self, embedding: np.ndarray, logit_scale: float) -> Scored:
        """Score one L2-normalised embedding [D] against every label."""
        similarity = self.embeddings @ embedding
        labels: list[Score] = []
        top: dict[str, Score] = {}
        for group in self.groups:
            sims = similarity[group.index]
            if group.kind == "exclusive":
                logits = logit_scale * sims
                probs = np.exp(logits - logits.max())
                values = probs / probs.sum()
            else:
                values = sims
            best = int(values.argmax())
            top[group.name] = Score(group.name, self.names[group.index[best]], float(values[best]))
            if group.kind == "exclusive":
                passed = [best] if values[best] >= self.thresholds[group.index[best]] else []
            else:
                passed = np.flatnonzero(values >= self.thresholds[group.index])
            for i in passed:
                labels.append(Score(group.name, self.names[group.index[i]], float(values[i])))
        return Scored(labels, top)


def load_label_bank(path: Path) -> LabelBank:
    """Load and validate labels.npz; every inconsistency names the file and the array."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise BundleError(f"{path}: label bank not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: not a readable label bank ({exc})") from None
    required = ("names", "groups", "embeddings", "thresholds", "group_names", "group_kinds")
    missing = [key for key in required if key not in arrays]
    if missing:
        raise BundleError(f"{path}: missing arrays {', '.join(missing)}")
    embeddings = arrays["embeddings"]
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise BundleError(f"{path}: embeddings must be [labels, dim], got {embeddings.shape}")
    count = embeddings.shape[0]
    for key in ("names", "groups", "thresholds"):
        if arrays[key].shape != (count,):
            raise BundleError(f"{path}: {key} has shape {arrays[key].shape}, expected ({count},)")
    if not np.all(np.isfinite(arrays["thresholds"])):
        raise BundleError(f"{path}: thresholds must be finite numbers")
    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    if np.any(np.abs(norms - 1.0) > NORM_TOLERANCE):
        worst = int(np.abs(norms - 1.0).argmax())
        raise BundleError(
            f"{path}: embedding of {arrays['names'][worst]!s} has norm {norms[worst]:.4f}, "
            "expected L2-normalised rows"
        )
    group_names = [str(g) for g in arrays["group_names"]]
    kinds = [str(k) for k in arrays["group_kinds"]]
    if len(group_names) != len(kinds):
        raise BundleError(f"{path}: group_names and group_kinds differ in length")
    for name, kind in zip(group_names, kinds, strict=True):
        if kind not in KINDS:
            raise BundleError(f"{path}: group {name} has kind {kind!r}, expected one of {KINDS}")
    unknown = sorted({str(g) for g in arrays["groups"]} - set(group_names))
    if unknown:
        raise BundleError(f"{path}: labels refer to undeclared groups {', '.join(unknown)}")
    return LabelBank(**{key: arrays[key] for key in required})


def save_label_bank(
    path: Path,
    names: list[str],
    groups: list[str],
    embeddings: np.ndarray,
    thresholds: list[float],
    group_kinds: dict[str, str],
) -> None:
    """Write labels.npz in the layout load_label_bank reads (used by the offline tools)."""
    np.savez(
        path,
        names=np.asarray(names),
        groups=np.asarray(groups),
        embeddings=np.asarray(embeddings, dtype=np.float32),
        thresholds=np.asarray(thresholds, dtype=np.float32),
        group_names=np.asarray(list(group_kinds)),
        group_kinds=np.asarray(list(group_kinds.values())),
    )
