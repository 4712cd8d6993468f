from datetime import UTC, datetime

import numpy as np
import pytest

from retrofit_agent.common.backoff import Backoff
from retrofit_agent.errors import DeviceLost, SourceError
from retrofit_agent.frames.capture import Frame, FrameSource, is_corrupt
from retrofit_agent.service.supervisor import SupervisedSource

GOOD = np.zeros((4, 4, 3), np.uint8)
CORRUPT = np.zeros((0, 0, 3), np.uint8)


class ScriptedSource(FrameSource):
    """Delivers a script: images, then an exception to raise or None (a clean end)."""

    def __init__(self, *script, dropped: int = 0) -> None:
        self.name = "/dev/video-scripted"
        self.script = list(script)
        self.closed = False
        self._dropped = dropped

    def _next(self) -> Frame | None:
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return None if item is None else Frame(item, 0, datetime.now(UTC))

    @property
    def dropped(self) -> int:
        return self._dropped

    def close(self) -> None:
        self.closed = True


class Harness:
    """A supervised source whose reopenings come from `reopened` and whose waits are recorded."""

    def __init__(self, first, *reopened, stop_after_waits=None, max_corrupt=3):
        self.reopened = list(reopened)
        self.waits = []
        self.stop_after_waits = stop_after_waits
        self.source = SupervisedSource(
            first, self.reopen, Backoff(1.0, 4.0, rand=lambda: 1.0), max_corrupt, self.wait
        )

    def reopen(self):
        item = self.reopened.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def wait(self, seconds):
        if seconds:
            self.waits.append(seconds)
        return self.stop_after_waits is None or len(self.waits) < self.stop_after_waits


def test_a_lost_camera_is_reopened_with_growing_waits_then_the_backoff_resets():
    first = ScriptedSource(GOOD, GOOD, DeviceLost("gone"), dropped=2)
    second = ScriptedSource(GOOD, DeviceLost("gone again"), dropped=1)
    third = ScriptedSource(GOOD, None)
    h = Harness(first, SourceError("not yet"), SourceError("not yet"), second, third)
    frames = list(h.source)
    assert len(frames) == 4
    assert h.waits == [1.0, 2.0, 4.0, 1.0]  # doubling while it fails, reset by a good frame
    assert first.closed and second.closed
    assert h.source.faults == {"lost": 2, "open_failed": 2}
    assert h.source.reconnects == 2 and h.source.up
    assert h.source.dropped == 3  # counted across the sources


def test_corrupt_frames_are_skipped_and_too_many_in_a_row_reopen():
    first = ScriptedSource(CORRUPT, CORRUPT, GOOD, CORRUPT, CORRUPT, CORRUPT, GOOD)
    h = Harness(first, ScriptedSource(GOOD, None))
    frames = list(h.source)
    assert len(frames) == 2  # a good frame from each source
    assert h.source.corrupt_frames == 5
    assert h.source.faults == {"corrupt": 1} and first.closed


def test_stopping_ends_the_frames_even_during_a_backoff():
    h = Harness(ScriptedSource(GOOD, DeviceLost("gone")), stop_after_waits=1)
    assert len(list(h.source)) == 1
    assert not h.source.up and h.waits == [1.0]


def test_a_file_that_ends_ends_the_run():
    h = Harness(ScriptedSource(GOOD, None))
    assert len(list(h.source)) == 1 and h.source.faults == {}


@pytest.mark.parametrize(
    ("image", "corrupt"),
    [
        (GOOD, False),
        (CORRUPT, True),
        (np.zeros((4, 4), np.uint8), True),
        (np.zeros((4, 4, 4), np.uint8), True),
        (np.zeros((4, 4, 3), np.float32), True),
        (None, True),
    ],
)
def test_what_counts_as_corrupt(image, corrupt):
    assert is_corrupt(image) is corrupt
