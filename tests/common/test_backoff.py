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
