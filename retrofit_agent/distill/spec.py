"""The student spec: everything export needs to rebuild the student and its preprocessing.

Made once per training run from the run config and the teacher, stored in the checkpoint as
its JSON dump and validated when a checkpoint is loaded, so every later step (export, quantize,
eval, bundle) reads typed fields. Checkpoints written before it was a model hold the same keys
and load unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from retrofit_agent.bundle.manifest import Resize
from retrofit_agent.bundle.sections import TeacherIdentity
from retrofit_agent.common.strict import StrictModel
from retrofit_agent.frames.preprocess import Preprocessor


class StudentSpec(StrictModel):
    backbone: str = Field(min_length=1, description="timm model name")
    dim: PositiveInt = Field(description="embedding width: the teacher's")
    hidden: list[PositiveInt] = Field(description="projection-head widths; [] is linear")
    dropout: NonNegativeFloat
    image_size: PositiveInt
    shortest_side: PositiveInt
    interpolation: Literal["bilinear", "bicubic", "area"]
    mean: tuple[float, float, float]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    teacher: TeacherIdentity
    teacher_logit_scale: PositiveFloat

    @property
    def resize(self) -> Resize:
        return Resize(shortest_side=self.shortest_side, interpolation=self.interpolation)

    def preprocessor(self) -> Preprocessor:
        """The agent's preprocessing for this student."""
        return Preprocessor(
            self.image_size, self.shortest_side, self.interpolation, self.mean, self.std
        )
