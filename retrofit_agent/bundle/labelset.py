"""The label set (contract 2): human-written TOML, read without torch by any tool.

    templates = ["a dashcam photo of {}.", "a photo of {} on the road."]   # default for groups

    [groups.weather]
    kind = "exclusive"                 # softmax over the group, one winner
    threshold = 0.4                    # probability the winner needs to be reported
    labels = { clear = "clear weather", rain = ["rain", "a rainy day"] }

    [groups.road_users]
    kind = "multi"                     # each label on its own: cosine >= its threshold
    threshold = 0.25
    templates = ["a photo of {} on the road."]
    labels = { car = "a car", pedestrian = { phrases = ["a pedestrian"], threshold = 0.22 } }

Each label's phrases are put into each of its group's templates. The offline tools encode those
prompts with the teacher's text tower (retrofit_agent.distill.labelset); `save_bank` writes
one embedding per label into labels.npz, in the order of `entries`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field, model_validator

from retrofit_agent.bundle.labels import save_label_bank
from retrofit_agent.common.settings import load_validated
from retrofit_agent.common.strict import StrictModel


def _one_placeholder(templates: list[str]) -> list[str]:
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one {{}}")
    return templates


Templates = Annotated[list[str], AfterValidator(_one_placeholder)]


class LabelSpec(StrictModel):
    phrases: list[str] = Field(min_length=1)
    threshold: float | None = None


class GroupSpec(StrictModel):
    kind: Literal["exclusive", "multi"]
    threshold: float | None = Field(None, description="exclusive default 0: always report")
    templates: Templates | None = None
    labels: dict[str, str | list[str] | LabelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _thresholds(self) -> GroupSpec:
        if self.kind == "multi" and self.threshold is None:
            missing = [n for n, s in self.label_specs().items() if s.threshold is None]
            if missing:
                raise ValueError(f"multi group needs a threshold (or one per label: {missing})")
        return self

    def label_specs(self) -> dict[str, LabelSpec]:
        def spec(value: str | list[str] | LabelSpec) -> LabelSpec:
            if isinstance(value, LabelSpec):
                return value
            return LabelSpec(phrases=[value] if isinstance(value, str) else value)

        return {name: spec(value) for name, value in self.labels.items()}


class LabelSet(StrictModel):
    name: str | None = None
    templates: Templates = Field(["a photo of {}."], min_length=1)
    groups: dict[str, GroupSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_labels(self) -> LabelSet:
        seen: dict[str, str] = {}
        for group, spec in self.groups.items():
            for label in spec.labels:
                if label in seen:
                    raise ValueError(f"label {label!r} is in groups {seen[label]} and {group}")
                seen[label] = group
        return self

    def entries(self) -> list[tuple[str, str, list[str], float]]:
        """(group, label, prompts, threshold) for every label, in file order."""
        rows = []
        for group, spec in self.groups.items():
            templates = spec.templates or self.templates
            default = spec.threshold if spec.threshold is not None else 0.0
            for label, label_spec in spec.label_specs().items():
                prompts = [t.format(p) for t in templates for p in label_spec.phrases]
                threshold = label_spec.threshold if label_spec.threshold is not None else default
                rows.append((group, label, prompts, threshold))
        return rows

    def prompts(self) -> list[str]:
        return [prompt for _, _, prompts, _ in self.entries() for prompt in prompts]

    def save_bank(self, embeddings: np.ndarray, path: Path) -> None:
        """labels.npz from one L2-normalised text embedding per entry [L, D]."""
        entries = self.entries()
        save_label_bank(
            path,
            names=[label for _, label, _, _ in entries],
            groups=[group for group, _, _, _ in entries],
            embeddings=embeddings,
            thresholds=[threshold for _, _, _, threshold in entries],
            group_kinds={group: spec.kind for group, spec in self.groups.items()},
        )


def load_label_set(path: Path) -> LabelSet:
    return load_validated(LabelSet, path, environ={}, what="label set")
