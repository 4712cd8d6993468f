"""The keep policy as the runtime calls it: reasons per frame, heartbeat, every_frame, and the
best frames of ended events coming back to be stored."""

import itertools

import numpy as np
import pytest
from helpers.observations import frame

from retrofit_agent.keep.config import KeepConfig
from retrofit_agent.keep.policy import KeepPolicy

pytestmark = pytest.mark.device  # the policy runs on the camera

CAR = ("road_users", "car")


def policy(**config) -> KeepPolicy:
    counter = itertools.count(10_000)
    return KeepPolicy(KeepConfig.model_validate(config), lambda: next(counter))


def test_a_static_scene_keeps_a_heartbeat_and_nothing_else():
    keep = policy(heartbeat_s=10.0, min_frames=3)
    decisions = [keep.decide(frame(s, CAR, at_s=s / 15), s / 15) for s in range(1, 15 * 60)]
    kept = [(i, d.reasons) for i, d in enumerate(decisions, 1) if d.reasons]
    # frame 1: heartbeat and novel (nothing kept yet); frame 3: the car held 3 frames
    assert kept[:2] == [(1, ("heartbeat", "novel")), (3, ("change",))]
    assert [i for i, r in kept[2:]] == [3 + 15 * 10 * n for n in range(1, 6)]  # 10 s after
    assert all(r == ("heartbeat",) for _, r in kept[2:])


def test_a_new_direction_is_kept_as_novel_and_remembered():
    keep = policy(min_frames=10, novelty={"radius": 0.1, "target_per_hour": 0})
    eye = np.eye(32, dtype=np.float32)
    reasons = [
        keep.decide(frame(s, embedding=eye[axis]), float(s)).reasons
        for s, axis in enumerate([0, 0, 1, 1, 0], 1)
    ]
    assert reasons == [("heartbeat", "novel"), (), ("novel",), (), ()]


def test_every_frame_keeps_every_frame():
    keep = policy(every_frame=True)
    reasons = {keep.decide(frame(s, CAR), float(s)).reasons for s in range(1, 20)}
    assert reasons == {("every_frame",)}


def test_the_best_frame_of_an_ended_event_comes_back_as_best():
    keep = policy(min_frames=2, end_frames=2, heartbeat_s=1000.0)
    scored = [((*CAR, 0.5),), ((*CAR, 0.6),), ((*CAR, 0.9),), ((*CAR, 0.7),), (), ()]
    decisions = [keep.decide(frame(s, *labels), float(s)) for s, labels in enumerate(scored, 1)]
    ended = [d for d in decisions if d.ended]
    assert len(ended) == 1 and ended[0].ended[0].best_seq == 3
    assert [(o.seq, o.reasons) for o in ended[0].best_frames] == [(3, ["best"])]


def test_close_ends_open_events_with_their_best_frames():
    keep = policy(min_frames=2)
    for s in range(1, 6):
        keep.decide(frame(s, (*CAR, 0.5 + s / 100)), float(s))
    closed = keep.close()
    assert [(e.label, e.end_reason, e.best_seq) for e in closed.ended] == [("car", "stopped", 5)]
    assert [o.seq for o in closed.best_frames] == [5]
