"""Exponential backoff with jitter, for reopening a camera (and any other retried fault).

The delay doubles per attempt up to a cap; each delay is drawn between half and all of that
step ("equal jitter"), so a fleet of cameras that lost power together does not retry in step,
yet no retry comes sooner than half its step.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, initial_s: float, max_s: float, rand: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rand = rand
        self.attempts = 0

    def next_delay(self) -> float:
        """The wait before the next attempt, in seconds; counts the attempt."""
        step = min(self.max_s, self.initial_s * 2**self.attempts)
        self.attempts += 1
        return step / 2 + self._rand() * step / 2

    def reset(self) -> None:
        """After a success: the next fault starts again from `initial_s`."""
        self.attempts = 0
