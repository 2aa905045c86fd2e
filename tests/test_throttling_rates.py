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


# Target flows recorded in the lab by bench/throttle.py (1 Gbit/s link without TSO/GSO, bytes
# counted on the wire): (seconds since the first byte, cumulative body bytes).
POLICED_64K = (  # hashlimit at 64 kbit/s: a 27 kB burst, then a packet every ~0.18 s
    (0.0, 3896), (0.245, 27444), (0.255, 27444), (0.343, 27444), (0.476, 28892), (0.646, 28892),
    (0.686, 30340), (0.765, 30340), (0.803, 30340), (0.979, 33236), (1.066, 33236),
    (1.131, 34684), (1.337, 36132), (1.472, 36132), (1.633, 37580), (1.661, 37580),
    (1.799, 39028), (1.843, 39028), (1.853, 39028), (1.961, 40476), (2.215, 41924),
    (2.238, 41924), (2.495, 43372), (2.506, 43372), (2.591, 44820), (2.629, 44820),
    (2.646, 44820), (2.68, 44820), (2.819, 49152), (2.837, 49152), (3.02, 49164), (3.116, 49164),
    (3.283, 50612), (3.402, 52060), (3.466, 52060), (3.492, 52060), (3.668, 53508),
    (3.754, 53508), (3.841, 54956), (3.99, 54956), (4.001, 54956),
)
SHAPED_140K = (  # an htb class of 140 kbit/s: no burst, lumps of five packets, one of thirteen
    (0.0, 0), (0.073, 7240), (0.233, 7240), (0.281, 7240), (0.426, 7240), (0.464, 7240),
    (0.526, 14480), (0.718, 14480), (0.991, 20272), (1.027, 20272), (1.037, 20272),
    (1.056, 20272), (1.2, 20272), (1.357, 26064), (1.451, 26064), (1.471, 26064), (1.564, 26064),
    (1.575, 26064), (1.867, 37648), (1.882, 37648), (2.011, 37648), (2.022, 37648),
    (2.116, 37648), (2.136, 37648), (2.19, 37648), (2.246, 37648), (2.457, 56472),
    (2.472, 56472), (2.514, 56472), (2.551, 56472), (2.589, 56472), (2.73, 56472),
    (2.825, 56472), (2.897, 56472), (2.934, 56472), (2.973, 56472), (2.993, 56472),
    (3.018, 56472), (3.099, 56472), (3.109, 56472), (3.132, 56472), (3.432, 69504),
    (3.483, 69504), (3.636, 69504), (3.646, 69504), (3.723, 69504), (3.868, 69504),
    (3.917, 69504), (3.933, 69504),
)


@pytest.mark.parametrize(("samples", "rate", "bend"), [(POLICED_64K, 64e3, 1),
                                                       (SHAPED_140K, 140e3, None)])
def test_recorded_flows_read_within_a_quarter_of_the_censors_rate(samples, rate, bend):
    assert rates.knee(samples) == bend  # the policer's burst is left out, the shaper has none
    assert rates.steady_rate(samples) == pytest.approx(rate, rel=0.25)
