"""Label events on hand-made frames: open after min_frames, survive short gaps, end after
end_frames at the last frame seen, the best frame by score, held until the end if not kept."""

import itertools

import pytest
from helpers.observations import frame

from retrofit_agent.keep.events import EventTracker

pytestmark = pytest.mark.device  # the policy runs on the camera

CAR = ("road_users", "car")
RAIN = ("weather", "rain")


def tracker(min_frames: int = 3, end_frames: int = 4, seqs=None) -> EventTracker:
    counter = itertools.count(1000)
    return EventTracker(min_frames, end_frames, seqs or (lambda: next(counter)))


def play(events: EventTracker, frames, kept: set[int] = frozenset()):
    """Feed frames (seq i at i/10 s); the changes of each frame that had any, by frame seq."""
    out = {}
    for obs in frames:
        changes = events.update(obs, obs.seq / 10, kept=obs.seq in kept)
        if changes.started or changes.ended:
            out[obs.seq] = changes
    return out


def frames_with(label_runs: list[tuple]) -> list:
    """Frames 1, 2, ... carrying the labels given per frame (a tuple of labels, maybe scored)."""
    return [frame(seq, *labels, at_s=seq / 10) for seq, labels in enumerate(label_runs, 1)]


def test_an_event_opens_after_min_frames_and_starts_at_the_first():
    events = tracker()
    out = play(events, frames_with([(CAR,)] * 5))
    assert list(out) == [3]
    (started,) = out[3].started
    assert (started.group, started.label, started.seq) == ("road_users", "car", 1000)
    assert (started.start_seq, started.end_seq, started.frames) == (1, 3, 3)
    assert started.end_reason is None and events.open_count == 1


def test_a_flicker_shorter_than_min_frames_is_no_event():
    out = play(tracker(), frames_with([(CAR,), (CAR,), (), (CAR,), ()] * 3))
    assert out == {}


def test_a_gap_shorter_than_end_frames_does_not_cut_the_event():
    runs = [(CAR,)] * 3 + [()] * 3 + [(CAR,)] * 2 + [()] * 4
    out = play(tracker(end_frames=4), frames_with(runs))
    assert list(out) == [3, 12]
    (ended,) = out[12].ended
    # ends at the last frame that carried it, not when its absence was confirmed
    assert (ended.start_seq, ended.end_seq, ended.frames, ended.end_reason) == (1, 8, 5, "absent")
    assert ended.duration_s == pytest.approx(0.7)  # frames 1..8 at 10 per second
    assert ended.end_utc > ended.start_utc


def test_the_best_frame_is_the_highest_score_and_is_handed_back_when_not_kept():
    scores = [0.5, 0.9, 0.7, 0.6]
    runs = [((*CAR, s),) for s in scores] + [()] * 4
    out = play(tracker(), frames_with(runs))
    (ended,) = out[8].ended
    assert (ended.best_seq, ended.best_score) == (2, pytest.approx(0.9))
    assert [o.seq for o in out[8].best_frames] == [2]

    kept_best = play(tracker(), frames_with(runs), kept={2})
    assert kept_best[8].best_frames == []  # stored already: nothing held


def test_two_events_with_the_same_best_frame_store_it_once():
    runs = [(CAR, (*RAIN, 0.95))] * 3 + [(RAIN,)] * 3 + [()] * 4
    runs[1] = ((*CAR, 0.99), (*RAIN, 0.99))  # frame 2 is best for both
    out = play(tracker(), frames_with(runs))
    car_end, rain_end = out[7], out[10]
    assert [e.label for e in car_end.ended] == ["car"] and [e.label for e in rain_end.ended] == [
        "rain"
    ]
    assert car_end.ended[0].best_seq == rain_end.ended[0].best_seq == 2
    assert [o.seq for o in car_end.best_frames] == [2] and rain_end.best_frames == []


def test_close_all_ends_open_events_as_stopped_and_forgets_short_runs():
    events = tracker()
    play(events, frames_with([(CAR, RAIN)] * 3 + [(CAR,)]))
    changes = events.close_all("stopped")
    assert {(e.label, e.end_reason) for e in changes.ended} == {
        ("car", "stopped"),
        ("rain", "stopped"),
    }
    assert events.open_count == 0 and events.close_all("stopped").ended == []


def test_without_a_seq_the_event_opens_on_a_later_frame():
    answers = iter([None, None, 7])  # the disk is full for two frames
    events = tracker(seqs=lambda: next(answers))
    out = play(events, frames_with([(CAR,)] * 6))
    assert list(out) == [5]
    (started,) = out[5].started
    assert (started.seq, started.start_seq, started.frames) == (7, 1, 5)


def test_open_events_are_what_a_crash_would_leave():
    events = tracker()
    play(events, frames_with([(CAR,)] * 6))
    (event,) = events.open_events()
    assert (event.start_seq, event.end_seq, event.end_reason) == (1, 6, None)
