import random

import pytest

from retrofit_agent.common.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half():
    low = Backoff(0.5, 8.0, rand=lambda: 0.0)
    high = Backoff(0.5, 8.0, rand=lambda: 0.999999)
    lows = [low.next_delay() for _ in range(8)]
    highs = [high.next_delay() for _ in range(8)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert highs == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0], rel=1e-5)
    assert low.attempts == 8


def test_real_jitter_spreads_and_stays_in_bounds():
    delays = [Backoff(1.0, 1.0).next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert max(delays) - min(delays) > 0.2  # not in step


def test_reset_starts_over():
    backoff = Backoff(1.0, 60.0, rand=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0 and backoff.attempts == 1


def test_rejects_nonsense_bounds():
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(5.0, 1.0)


def test_full_jitter_draws_the_whole_step():
    low = Backoff(0.5, 8.0, "full", rand=lambda: 0.0)
    high = Backoff(0.5, 8.0, "full", rand=lambda: 0.999999)
    assert [low.next_delay() for _ in range(8)] == [0.0] * 8
    highs = [high.next_delay() for _ in range(8)]
    assert highs == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0], rel=1e-5)


def test_full_jitter_is_uniform_below_the_step():
    backoff = Backoff(2.0, 2.0, "full", rand=random.Random(1).random)
    delays = [backoff.next_delay() for _ in range(20_000)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    deciles = [sum(0.2 * k <= d < 0.2 * (k + 1) for d in delays) / len(delays) for k in range(10)]
    assert deciles == pytest.approx([0.1] * 10, abs=0.01)  # even the lowest (equal: none)


def test_full_jitter_is_the_uploaders_formula():
    """uniform(0, min(cap, base * 2**(failures - 1))), draw for draw, so a seeded uploader
    waits exactly what it did before the backoff was shared."""
    base, cap = 0.05, 0.4
    backoff = Backoff(base, cap, "full", rand=random.Random(7).random)
    rng = random.Random(7)
    expected = [rng.uniform(0, min(cap, base * 2 ** (f - 1))) for f in range(1, 30)]
    assert [backoff.next_delay() for _ in range(1, 30)] == expected


def test_retry_after_is_a_floor_for_either_jitter():
    for jitter in ("full", "equal"):
        backoff = Backoff(1.0, 8.0, jitter, rand=lambda: 0.5)
        assert backoff.next_delay(at_least_s=30.0) == 30.0  # the server's pause, even past the cap
        assert backoff.next_delay(at_least_s=0.1) == (1.0 if jitter == "full" else 1.5)
        assert backoff.attempts == 2  # a floored attempt still counts


def test_thousands_of_attempts_stay_at_the_cap():
    backoff = Backoff(0.5, 30.0, rand=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(5000)]  # a camera gone for days
    assert delays[-1] == 30.0 and max(delays) == 30.0
