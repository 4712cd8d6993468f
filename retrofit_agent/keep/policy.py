"""The keep policy: which frames are stored and uploaded, and the label events they make.

Every frame is scored and published; the runtime asks `KeepPolicy.decide` once per frame, on
the inference thread, whether to store it and why (`Observation.reasons`):

- change: the label set changed and the new set held for `min_frames` frames (keep.change);
- heartbeat: nothing was kept for `heartbeat_s`, so a quiet scene still reports now and then;
- novel: the embedding is far from each recently kept one (keep.novelty);
- best: the highest-scoring frame of a label event that just ended (keep.events), stored then;
- every_frame: `every_frame = true`, the behaviour before the policy, for debugging.

Time is the caller's `t` in seconds on the source's clock (a camera's capture time, a file's
own timeline), so a dry run decides as the camera would at the file's frame rate. The policy
is pure logic over observations: unit tests drive it with hand-made label sequences and
embeddings. Measured cost (bench/keep_policy.py): bench/results/keep_policy.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from retrofit_agent.event import EndReason, Event
from retrofit_agent.keep.change import ChangeRule
from retrofit_agent.keep.config import KeepConfig
from retrofit_agent.keep.events import NO_CHANGES, EventTracker
from retrofit_agent.keep.novelty import Novelty
from retrofit_agent.observation import EMBEDDING_DTYPE, Observation, Reason


class Decision(NamedTuple):  # a tuple: made for every frame, at a third of a dataclass's cost
    """What to do with one frame: store it (`reasons` not empty), and the events it changed,
    with the best frames of the events it ended (to be stored too, reason `best`)."""

    reasons: tuple[Reason, ...]
    started: list[Event]
    ended: list[Event]
    best_frames: list[Observation]


class KeepPolicy:
    def __init__(self, config: KeepConfig, new_seq: Callable[[], int | None]) -> None:
        self.config = config
        self.change = ChangeRule(config.min_frames)
        self.novelty = Novelty(config.novelty) if config.novelty.enabled else None
        self.events = EventTracker(config.min_frames, config.end_frames, new_seq)
        self._last_kept_t: float | None = None

    def decide(self, observation: Observation, t: float) -> Decision:
        reasons = self._reasons(observation, t)
        changes = self.events.update(observation, t, kept=bool(reasons))
        if changes is NO_CHANGES:
            return Decision(reasons, [], [], [])
        best = [o.model_copy(update={"reasons": ["best"]}) for o in changes.best_frames]
        return Decision(reasons, changes.started, changes.ended, best)

    def close(self, reason: EndReason = "stopped") -> Decision:
        """End every open event (the agent stops): their ends, and best frames to store."""
        changes = self.events.close_all(reason)
        best = [o.model_copy(update={"reasons": ["best"]}) for o in changes.best_frames]
        return Decision((), [], changes.ended, best)

    def _reasons(self, observation: Observation, t: float) -> tuple[Reason, ...]:
        if self.config.every_frame:
            return ("every_frame",)
        reasons: list[Reason] = []
        if self.change.update(frozenset((s.group, s.label) for s in observation.labels)):
            reasons.append("change")
        if self._last_kept_t is None or t < self._last_kept_t:  # first frame, or a clock set back
            self._last_kept_t = t - self.config.heartbeat_s
        if t - self._last_kept_t >= self.config.heartbeat_s:
            reasons.append("heartbeat")
        embedding = None
        if self.novelty is not None:
            embedding = np.frombuffer(observation.embedding, EMBEDDING_DTYPE).astype(np.float32)
            if self.novelty.observe(embedding, t):
                reasons.append("novel")
        if reasons:
            self._last_kept_t = t
            if self.novelty is not None and embedding is not None:  # a kept frame: remembered
                self.novelty.remember(embedding)
        return tuple(reasons)
