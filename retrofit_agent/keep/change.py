"""The *change* rule: the set of labels changed, and the new set held for `min_frames` frames.

The set is the frame's labels as the bundle reports them (`Observation.labels`: what passed
its threshold; with a calibrated bundle, what did not abstain). The stable set only moves to a
new set that was seen on `min_frames` consecutive frames, so a label flickering on or off for
fewer frames is not a change, and a return to the stable set cancels a candidate. The first
set to hold after start counts as a change (from nothing known).
"""

from __future__ import annotations

LabelSet = frozenset[tuple[str, str]]  # (group, label)


class ChangeRule:
    def __init__(self, min_frames: int) -> None:
        self.min_frames = min_frames
        self.stable: LabelSet | None = None  # None: no set has held yet
        self._candidate: LabelSet | None = None
        self._run = 0

    def update(self, labels: LabelSet) -> bool:
        """One frame's labels; True on the frame where a new set has held `min_frames`."""
        if labels == self.stable:
            self._candidate, self._run = None, 0
            return False
        if labels == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = labels, 1
        if self._run < self.min_frames:
            return False
        self.stable, self._candidate, self._run = labels, None, 0
        return True
