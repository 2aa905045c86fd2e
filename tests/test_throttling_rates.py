"""probe.throttling.rates: goodput, the steady part after the burst, interval rates."""

from __future__ import annotations

import pytest

from probe.throttling import rates


def test_rate_arithmetic():
    samples = ((0.0, 10_000), (0.5, 60_000), (1.5, 160_000), (2.0, 210_000), (4.0, 410_000))
    assert rates.goodput(samples) == pytest.approx(8 * 400_000 / 4.0)
    # skip min(1 s, 30 % of 4 s) = 1 s: the steady part starts at 1.5 s
    assert rates.steady_samples(samples) == samples[2:]
    assert rates.interval_rates(samples) == pytest.approx([8e5, 8e5])
    assert rates.goodput(((0.0, 5),)) is None
    assert rates.steady_samples(((0.0, 0), (0.01, 100))) == ((0.0, 0), (0.01, 100))


def test_knee_finds_the_burst_then_the_rate():
    # 100 kB at once, then 140 kbit/s (17.5 kB/s) for 3 s
    policed = ((0.0, 0), (0.05, 100_000), *((t / 10, 100_000 + int(17_500 * (t / 10 - 0.05)))
                                              for t in range(3, 31, 3)))
    bend = rates.knee(policed)
    assert bend == 1
    assert rates.goodput(rates.steady_samples(policed)) == pytest.approx(140e3, rel=0.02)
    assert rates.steady_seconds(policed) == pytest.approx(2.95)
    straight = tuple((t / 10, 50_000 * t) for t in range(20))
    assert rates.knee(straight) is None
    slow_start = tuple((t / 10, 1000 * t * t) for t in range(20))  # speeds up: no knee
    assert rates.knee(slow_start) is None


def test_excluded_below_is_the_slowest_policer_the_flow_would_have_outgrown():
    # 1 MB in 0.5 s: a policer of rate R with 2 s of burst passes R x 2.5 s; below 3.2 Mbit/s
    # that is less than 1 MB
    assert rates.excluded_below(((0.0, 0), (0.5, 1_000_000))) == pytest.approx(3.2e6)
    assert rates.excluded_below(()) == 0.0
