"""The change rule on hand-made label sequences: flicker is not a change, a held change is."""

import pytest

from retrofit_agent.keep.change import ChangeRule

pytestmark = pytest.mark.device  # the policy runs on the camera

A = frozenset({("weather", "clear"), ("road_users", "car")})
B = frozenset({("weather", "rain"), ("road_users", "car")})
C = frozenset({("weather", "rain")})


def changes(sequence: list[frozenset], min_frames: int = 3) -> list[int]:
    rule = ChangeRule(min_frames)
    return [i for i, labels in enumerate(sequence) if rule.update(labels)]


def test_the_first_set_to_hold_is_a_change():
    assert changes([A] * 5) == [2]


def test_a_held_change_is_kept_on_the_frame_it_has_held_min_frames():
    assert changes([A] * 4 + [B] * 4) == [2, 6]


def test_flicker_shorter_than_min_frames_is_not_a_change():
    sequence = [A] * 4 + [B] + [A] * 3 + [B, B] + [A] * 3 + [frozenset()] + [A] * 2
    assert changes(sequence) == [2]


def test_a_return_to_the_stable_set_cancels_the_candidate():
    # B twice, back to A, B twice again: never three Bs in a row
    assert changes([A] * 3 + [B, B, A, B, B, A]) == [2]


def test_alternating_sets_never_hold():
    assert changes([A, B, C] * 5, min_frames=2) == []


def test_each_distinct_set_must_hold_on_its_own():
    # B then C (differing only by the car): each holds 3 frames, each is a change
    assert changes([A] * 3 + [B] * 3 + [C] * 3) == [2, 5, 8]
    assert changes([A] * 3 + [B, B, C, C]) == [2]  # neither held 3


def test_min_frames_one_makes_every_new_set_a_change():
    assert changes([A, A, B, A, C], min_frames=1) == [0, 2, 3, 4]
