"""The `[keep]` section: which frames are stored and uploaded, and how label events are cut.

The defaults come from bench/keep_policy.py (bench/results/keep_policy.md): `min_frames = 5`
is the most hysteresis that still sees every scene of models/demo.mp4 (10 FPS, 2 s scenes,
whose labels flicker for up to 4 frames inside a scene), and the least with at most one
spurious change per scene; `end_frames = 20` (1.3 s at 15 FPS) keeps one event per scene and
label there and, on the road clip, cuts the events (and their best rows) of a flickering
label by a third against 10. The novelty radius adapts to hold `target_per_hour`, never below
`radius_min`: 40 times the largest distance measured between frames of a still scene (sensor
noise and JPEG), so a parked car's noise, auto-exposure and vibration are not news.
"""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from retrofit_agent.common.strict import StrictModel

Radius = float  # a cosine distance, 1 - cos: 0 the same direction, 2 the opposite one


class NoveltyConfig(StrictModel):
    """Keep a frame whose embedding is farther than `radius` from each of the last `memory`
    kept embeddings; with `target_per_hour` the radius adapts to keep that many an hour."""

    enabled: bool = True
    memory: PositiveInt = Field(10, description="kept embeddings compared against")
    radius: Radius = Field(0.05, gt=0, le=2, description="cosine distance; the adaptive start")
    target_per_hour: NonNegativeFloat = Field(360.0, description="0: the radius stays fixed")
    radius_min: Radius = Field(0.01, gt=0, le=2, description="adaptive floor: noise, not news")
    radius_max: Radius = Field(0.5, gt=0, le=2, description="adaptive ceiling")

    @model_validator(mode="after")
    def _radius_within_bounds(self) -> NoveltyConfig:
        if not self.radius_min <= self.radius <= self.radius_max:
            raise ValueError("radius must lie within radius_min..radius_max")
        return self


class KeepConfig(StrictModel):
    """Every frame is scored and published; these rules decide which are stored and uploaded."""

    every_frame: bool = Field(False, description="store every frame (debugging)")
    min_frames: PositiveInt = Field(5, description="a new label set, or a label, must hold")
    end_frames: PositiveInt = Field(20, description="a label absent this long ends its event")
    heartbeat_s: PositiveFloat = Field(60.0, description="at least one observation this often")
    novelty: NoveltyConfig = NoveltyConfig()
