"""The *novel* rule: an embedding farther than a cosine radius from every recently kept one.

The last `memory` kept embeddings (kept for any reason) sit in a preallocated float32 ring; a
frame is novel when 1 - cos to each of them exceeds the radius. Near-duplicates are dropped,
so a parked car keeps little and a drive keeps more. Measured (bench/keep_policy.py): a matrix
of 10 x 128 against one vector is a few microseconds, most of the rule's cost is Python.

With `target_per_hour`, the radius adapts (a Robbins-Monro step on its logarithm, like an
online quantile): each novel frame multiplies it by e^GAIN, and it shrinks continuously at
GAIN * target per hour, so novel frames settle at the target rate whatever the model's
embedding geometry. It never goes below `radius_min` (noise, not news: a static scene keeps
nothing) or above `radius_max`.
"""

from __future__ import annotations

import math

import numpy as np

from retrofit_agent.keep.config import NoveltyConfig

GAIN = 0.1  # log-radius step per novel frame: 10 % wider
MAX_STEP_S = 10.0  # a gap in the frames (a reopened camera) counts as at most this long


class Novelty:
    def __init__(self, config: NoveltyConfig) -> None:
        self.config = config
        self._log_radius = math.log(config.radius)
        self._log_min, self._log_max = math.log(config.radius_min), math.log(config.radius_max)
        self._shrink_per_s = GAIN * config.target_per_hour / 3600.0
        self._memory: np.ndarray | None = None  # [memory, D], allocated with the first frame
        self._count = 0  # embeddings written to the ring so far
        self._last_t: float | None = None
        self.novel = 0  # novel frames so far

    @property
    def radius(self) -> float:
        return math.exp(self._log_radius)

    def observe(self, embedding: np.ndarray, t: float) -> bool:
        """Whether `embedding` (unit length) is novel at time `t` (seconds); adapts the radius."""
        if self._memory is None or self._memory.shape[1] != embedding.shape[0]:
            self._memory = np.zeros((self.config.memory, embedding.shape[0]), np.float32)
            self._count = 0  # a reload to another embedding size forgets the old ones
        filled = min(self._count, len(self._memory))
        novel = filled == 0 or 1.0 - float((self._memory[:filled] @ embedding).max()) > self.radius
        if self.config.target_per_hour:
            step = 0.0 if self._last_t is None else min(max(t - self._last_t, 0.0), MAX_STEP_S)
            log_radius = self._log_radius - self._shrink_per_s * step + GAIN * novel
            self._log_radius = min(max(log_radius, self._log_min), self._log_max)
        self._last_t = t
        self.novel += novel
        return novel

    def remember(self, embedding: np.ndarray) -> None:
        """A kept frame's embedding joins the ring, replacing the oldest."""
        if self._memory is not None and self._memory.shape[1] == embedding.shape[0]:
            self._memory[self._count % len(self._memory)] = embedding
            self._count += 1
