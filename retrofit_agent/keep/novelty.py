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
        self.radius = config.radius
        self._min, self._max = config.radius_min, config.radius_max
        self._adaptive = config.target_per_hour > 0
        self._grow = math.exp(GAIN)
        self._shrink_per_s = GAIN * config.target_per_hour / 3600.0  # of the log-radius
        self._memory: np.ndarray | None = None  # [memory, D], allocated with the first frame
        self._count = 0  # embeddings written to the ring so far
        self._last_t: float | None = None
        self.novel = 0  # novel frames so far

    def observe(self, embedding: np.ndarray, t: float) -> bool:
        """Whether `embedding` (unit length) is novel at time `t` (seconds); adapts the radius."""
        memory = self._memory
        if memory is None or memory.shape[1] != embedding.shape[0]:
            self._memory = memory = np.zeros((self.config.memory, embedding.shape[0]), np.float32)
            self._count = 0  # a reload to another embedding size forgets the old ones
        count = self._count
        if count == 0:
            novel = True
        else:  # the steady state compares the whole ring, without a slice
            kept = memory if count >= len(memory) else memory[:count]
            novel = 1.0 - float(np.dot(kept, embedding).max()) > self.radius
        if self._adaptive:
            radius = self.radius
            if self._last_t is not None and t > self._last_t:
                radius *= math.exp(-self._shrink_per_s * min(t - self._last_t, MAX_STEP_S))
            if novel:
                radius *= self._grow
            self.radius = min(max(radius, self._min), self._max)
        self._last_t = t
        self.novel += novel
        return novel

    def remember(self, embedding: np.ndarray) -> None:
        """A kept frame's embedding joins the ring, replacing the oldest."""
        if self._memory is not None and self._memory.shape[1] == embedding.shape[0]:
            self._memory[self._count % len(self._memory)] = embedding
            self._count += 1
