"""Exponential backoff with jitter, for every retried fault (a camera reopened, an upload).

The step doubles per attempt up to a cap; the delay is drawn within it, so a fleet that failed
together (power came back, the ingest server restarted) does not retry in step:
- "equal" jitter (the camera watchdog): between half and all of the step, so no retry comes
  sooner than half its step: a lost camera is not hammered with reopens.
- "full" jitter (the uploader): uniform in [0, step]. It spreads a fleet's retries the most for
  the fewest requests (the AWS architecture blog's comparison), which is what a shared ingest
  server wants; a server that asks for a pause (Retry-After) gets at least that, `at_least_s`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal

Jitter = Literal["equal", "full"]


class Backoff:
    def __init__(
        self,
        initial_s: float,
        max_s: float,
        jitter: Jitter = "equal",
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._rand = rand
        # doublings past this reach the cap anyway (and 2**attempts would overflow a float)
        self._max_doublings = math.ceil(math.log2(max_s / initial_s)) + 1
        self.attempts = 0

    def next_delay(self, at_least_s: float = 0.0) -> float:
        """The wait before the next attempt, in seconds, never below `at_least_s`; counts the
        attempt."""
        step = min(self.max_s, self.initial_s * 2 ** min(self.attempts, self._max_doublings))
        self.attempts += 1
        low = step / 2 if self.jitter == "equal" else 0.0
        return max(low + self._rand() * (step - low), at_least_s)

    def reset(self) -> None:
        """After a success: the next fault starts again from `initial_s`."""
        self.attempts = 0
