"""probe.throttling.rates: goodput, the steady part after the burst, interval rates."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


SHAPED_140K_LATE_LUMP = (  # htb at 140 kbit/s on 100 Mbit/s: 25 kB in one lump at 3.45 s; a
    # line through every sample read 1.34x the rate, one through the lump starts reads 1.03x
    (0.0, 0), (0.175, 5502), (0.321, 5502), (0.589, 12742), (0.642, 12742), (0.655, 12742),
    (0.695, 12742), (0.887, 18534), (0.909, 18534), (1.209, 18534), (1.511, 30118),
    (1.811, 30118), (1.849, 30118), (1.942, 35910), (2.01, 35910), (2.145, 35910),
    (2.183, 35910), (2.233, 35910), (2.362, 54734), (2.423, 54734), (2.436, 54734),
    (2.455, 54734), (2.465, 54734), (2.624, 54734), (2.634, 54734), (2.697, 54734),
    (2.875, 54734), (2.952, 54734), (3.05, 54734), (3.072, 54734), (3.083, 54734),
    (3.315, 54734), (3.45, 79350), (3.462, 79350), (3.499, 79350), (3.52, 79350), (3.741, 79350),
    (3.798, 79350), (3.856, 79350), (3.903, 79350),
)
SHAPED_2M_LATE_STALL = (  # htb at 2 Mbit/s on 100 Mbit/s: steady, then a stall in the last
    # 0.27 s that the knee took for the end of a burst (read 0.18x, the run 0.56x)
    (0.0, 0), (0.179, 50680), (0.389, 120184), (0.411, 120184), (0.461, 120184),
    (0.549, 143352), (0.572, 143352), (0.589, 143352), (0.708, 172312), (0.809, 242040),
    (0.863, 242040), (1.157, 309384), (1.458, 361576), (1.603, 393432), (1.697, 435424),
    (1.896, 461912), (1.993, 496664), (2.003, 496664), (2.034, 496664), (2.336, 566168),
    (2.381, 589336), (2.536, 635672), (2.619, 635672), (2.692, 658840), (2.703, 658840),
    (2.713, 658840), (2.723, 658840), (2.928, 705176), (2.945, 705176), (3.246, 800744),
    (3.355, 813776), (3.657, 883280), (3.705, 913688), (3.717, 913688), (3.728, 913688),
    (3.888, 945544), (3.899, 945544), (3.995, 950272),
)
POLICED_140K = (  # hashlimit at 140 kbit/s on 1 Gbit/s: a 46 kB burst, then a packet or two
    # per rise; TCP behind the policer gets ~0.85x the rate
    (0.0, 0), (0.146, 46336), (0.227, 47784), (0.237, 47784), (0.304, 47784), (0.41, 47784),
    (0.518, 50680), (0.65, 50680), (0.819, 53576), (0.883, 53576), (1.16, 60816),
    (1.243, 60816), (1.314, 63712), (1.341, 63712), (1.475, 63712), (1.502, 63712),
    (1.52, 66608), (1.553, 66608), (1.606, 66608), (1.73, 69504), (1.777, 69504),
    (1.816, 69504), (1.932, 73848), (2.016, 73848), (2.027, 73848), (2.062, 73848),
    (2.099, 73848), (2.11, 73848), (2.189, 76744), (2.243, 76744), (2.412, 79640),
    (2.524, 79640), (2.824, 85432), (2.898, 85432), (2.952, 85432), (2.962, 85432),
    (3.038, 89776), (3.075, 89776), (3.086, 89776), (3.167, 89776), (3.216, 92672),
    (3.263, 92672), (3.354, 92672), (3.395, 95568), (3.406, 95568), (3.532, 95568),
    (3.563, 95568), (3.699, 98464), (3.72, 98464), (3.924, 101360), (4.001, 101360),
)

SHAPED_64K = (  # htb at 64 kbit/s on 100 Mbit/s: five lumps in 4 s, two of them in the first
    # second; fitted through the three after it, the rate read 0.72x (the run 0.71x)
    (0.0, 0), (0.068, 0), (0.137, 7240), (0.165, 7240), (0.221, 7240), (0.269, 7240),
    (0.282, 7240), (0.293, 7240), (0.334, 7240), (0.456, 7240), (0.648, 7240), (0.873, 7240),
    (0.946, 7240), (1.169, 14480), (1.345, 14480), (1.457, 14480), (1.475, 14480),
    (1.485, 14480), (1.785, 14480), (1.837, 14480), (1.874, 14480), (1.902, 14480),
    (1.972, 14480), (1.997, 17376), (2.293, 17376), (2.313, 17376), (2.558, 20272),
    (2.621, 20272), (2.664, 20272), (2.703, 20272), (3.005, 33304), (3.034, 33304),
    (3.081, 33304), (3.381, 33304), (3.527, 33304), (3.595, 33304), (3.786, 33304),
    (3.819, 33304), (3.851, 33304),
)


@pytest.mark.parametrize(("samples", "rate", "bend"), [
    (POLICED_64K, 64e3, 1), (POLICED_140K, 140e3, 1), (SHAPED_140K, 140e3, None),
    (SHAPED_140K_LATE_LUMP, 140e3, None), (SHAPED_2M_LATE_STALL, 2e6, None),
    (SHAPED_64K, 64e3, None)])
def test_recorded_flows_read_within_a_quarter_of_the_censors_rate(samples, rate, bend):
    assert rates.knee(samples) == bend  # the policer's burst is left out, the shaper has none
    assert rates.steady_rate(samples) == pytest.approx(rate, rel=0.25)


def test_the_fit_goes_through_lump_starts_and_never_above_the_ceiling():
    # 10 kB lumps every 0.5 s (160 kbit/s), the flow cut 0.45 s after the last one: the lump
    # starts give the rate, the flat samples between them add nothing
    lumpy = tuple((i / 10, 10_000 * ((i + 4) // 5)) for i in range(41))
    assert rates.lump_starts(lumpy)[:2] == ((0.1, 0), (0.6, 10_000))
    assert rates.steady_rate(lumpy) == pytest.approx(160e3, rel=0.01)
    # 100 kB/s, a stall from 1 s to 2.5 s, 100 kB/s again: the rises after the stall lie on an
    # 800 kbit/s line, but the window from 1 s moved 150 kB in 3 s: the ceiling holds
    stall = (*((i / 10, 10_000 * i) for i in range(11)),
             *((2.5 + i / 10, 100_000 + 10_000 * i) for i in range(16)))
    assert rates.knee(stall) is None
    assert rates.ceiling(rates.steady_samples(stall)) == pytest.approx(400e3)
    assert rates.steady_rate(stall) == pytest.approx(400e3)
    stalled = ((0.0, 0), (1.0, 5_000), (2.0, 5_000), (3.0, 5_000), (4.0, 5_000))
    assert rates.steady_rate(stalled) == 0.0


def test_a_stall_at_the_end_is_not_a_knee():
    steady = tuple((i / 10, 25_000 * i) for i in range(37))  # 2 Mbit/s for 3.6 s
    stalled = (*steady, (3.8, steady[-1][1]), (3.9, steady[-1][1]), (4.0, steady[-1][1]))
    assert rates.knee(stalled) is None
    assert rates.steady_rate(stalled) == pytest.approx(2e6, rel=0.01)
    # the same bend a quarter of the flow earlier is a burst then a rate
    burst = (*((i / 10, 250_000 * i) for i in range(11)), *((1 + i / 10, 2_500_000 + 25_000 * i)
                                                             for i in range(1, 31)))
    assert rates.knee(burst) == 10


def _arrived(rate: float, burst: float, line: float, at: float) -> float:
    """Bytes a token bucket (bytes/s, full at 0) has let through by `at` on a line of `line`."""
    drained = burst / line
    return line * at if at < drained else burst + rate * (at - drained)


def _policed(rate: float, burst: float, line: float, seconds: float, seed: int) -> rates.Samples:
    """A flow behind a token bucket counted as TCP counts it: the burst in order, then lumps (a
    hole repaired 0.05-1.5 s after the burst, as after a timeout, then every 0.05-0.5 s releases
    what arrived behind it), sampled every 10-300 ms."""
    rnd = random.Random(seed)
    drained = burst / line
    repairs, at = [], drained + rnd.uniform(0.05, 1.5)
    while at < seconds and len(repairs) < 200:
        repairs.append(at)
        at += rnd.uniform(0.05, 0.5)
    samples, now = [(0.0, 0)], 0.0
    for _ in range(1000):
        now += rnd.uniform(0.01, 0.3)
        if now > seconds:
            break
        counted_to = max([drained, *(r for r in repairs if r <= now)]) if now > drained else now
        samples.append((now, max(samples[-1][1], int(_arrived(rate, burst, line, counted_to)))))
    return tuple(samples)


@settings(max_examples=300, deadline=None)
@given(rate_bps=st.sampled_from([64e3, 140e3, 500e3, 2e6, 10e6]),
       burst_s=st.floats(1.0, 2.0), line_bps=st.sampled_from([100e6, 1e9]),
       seconds=st.floats(3.0, 5.0), seed=st.integers(0, 2**32))
def test_a_policer_is_not_over_read(rate_bps, burst_s, line_bps, seconds, seed):
    """Whatever the lumps, the steady rate of a policed flow is at most what the policer let
    through from the window's start (what had been counted then) to the count's last rise: its
    rate, plus what was left of the burst and held out of order at the start, over the window.
    (A line through the lump starts alone, without the ceiling, breaks this in many flows.)"""
    rate, burst, line = rate_bps / 8, rate_bps / 8 * burst_s, line_bps / 8
    samples = _policed(rate, burst, line, seconds, seed)
    steady = rates.steady_samples(samples)
    last_rise = rates.lump_starts(steady)[-1][0]
    let_through = _arrived(rate, burst, line, last_rise) - steady[0][1]
    assert rates.steady_rate(samples) <= 8 * let_through / (last_rise - steady[0][0]) + 1.0


@pytest.mark.parametrize("seed", range(40))
def test_a_flowing_count_is_read_through_its_samples_not_a_sample_late(seed):
    """A count that rises at (nearly) every sample is no lumps: a line through lump starts (each
    a sample late) adds the sampling's jitter (a paced 2.6 Mbit/s flow once read 0.85x)."""
    rnd = random.Random(seed)
    t, samples = 0.0, [(0.0, 0)]
    while t < 2.0:  # memoryless sampling as measure/sampling.py does, 10-300 ms
        t += min(0.3, max(0.01, rnd.expovariate(10)))
        samples.append((t, int(327_680 * t)))  # 2.62 Mbit/s
    assert rates.steady_rate(tuple(samples)) == pytest.approx(2_621_440, rel=0.02)
