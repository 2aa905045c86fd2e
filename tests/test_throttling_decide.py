"""probe.throttling.decide.assess / decide_early on synthetic flows with known shapes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.measure.throughput import sample_delay
from probe.model import ThroughputResult
from probe.throttling import decide
from probe.throttling.rates import goodput, steady_samples

MSS = 1448


def flow(rate_bps: float, seconds: float, *, burst: int = 0, noise: float = 0.0,
         max_bytes: int = 1 << 30, seed: int = 0, packets: bool = True) -> ThroughputResult:
    """A flow as the sampler would see it: burst at t=0, then `rate_bps` (+- noise per
    interval), whole packets only when `packets`, cut at max_bytes or `seconds`."""
    rng = random.Random(seed)
    samples = [(0.0, min(burst, max_bytes))]
    t, exact = 0.0, float(burst)
    while t < seconds and samples[-1][1] < max_bytes:
        dt = min(sample_delay(rng), seconds - t)
        t += dt
        exact += rate_bps / 8 * dt * max(0.0, 1 + rng.gauss(0, noise))
        got = int(exact // MSS * MSS) if packets else int(exact)
        if got >= max_bytes:
            t -= dt * (got - max_bytes) / max(1, got - samples[-1][1])
            got = max_bytes
        samples.append((t, got))
    series = tuple(samples)
    return ThroughputResult(url="https://h/bulk", samples=series, bytes_received=series[-1][1],
                            goodput_bps=goodput(series), steady_bps=goodput(steady_samples(series)))


def policed(n: int, seed: int = 0) -> list[ThroughputResult]:
    return [flow(140e3, 1.5, burst=30_000, seed=seed + i) for i in range(n)]


def fast(n: int, rate: float = 400e6, seed: int = 100) -> list[ThroughputResult]:
    return [flow(rate, 5.0, max_bytes=256 << 10, burst=16_000, noise=0.2, seed=seed + i)
            for i in range(n)]


def test_policed_target_against_fast_control_is_throttled():
    est = decide.assess(policed(3), fast(3), "sni_swap")
    assert est.state == "throttled"
    assert est.method == "sni_swap"
    assert est.rate_bps == pytest.approx(140e3, rel=0.25)
    assert est.ratio is not None and est.ratio < 0.01
    assert est.p_value is not None and est.p_value < decide.EARLY_ALPHA
    assert est.confidence is not None and est.confidence > 0.95
    assert est.bytes_used == sum(r.bytes_received for r in policed(3) + fast(3))


def test_a_target_that_finishes_fast_is_never_throttled():
    """Scheduler noise on a gigabit path: the target's flows look a quarter of the control's but
    still finish at 100 Mbit/s. Only the fast floor stands between that and a false alarm."""
    noisy = fast(3, rate=100e6, seed=7)
    unfloored = decide._state(1e-4, 0.25, 100e6, 400e6, decide.ALPHA, None)
    assert unfloored == "throttled"  # what the test and ratio alone would say
    est = decide.assess(noisy, fast(3), "sni_swap")
    assert est.ratio is not None and est.ratio < decide.RATIO_THROTTLED
    assert est.state == "inconclusive", est
    slower = [flow(4e6, 5.0, max_bytes=256 << 10, burst=16_000, seed=7 + i) for i in range(3)]
    assert decide.assess(slower, fast(3), "sni_swap").state == "throttled"


def test_everything_slow_is_degraded_not_throttled():
    slow_control = [flow(150e3, 1.5, burst=30_000, seed=50 + i) for i in range(3)]
    assert decide.assess(policed(3), slow_control, "sni_swap").state == "degraded"
    # against an expected rate: a 20 Mbit/s line where both sides get ~3 Mbit/s
    target = [flow(3e6, 1.5, noise=0.3, seed=i) for i in range(3)]
    control = [flow(3e6, 1.5, noise=0.3, seed=20 + i) for i in range(3)]
    est = decide.assess(target, control, "direct", expected_bps=20e6)
    assert est.state == "degraded"
    assert decide.assess(target, control, "direct").state == "clean"  # 3 Mbit/s > floor


def test_noisy_equal_rates_are_clean():
    target = [flow(20e6, 1.5, noise=0.4, seed=i, packets=False) for i in range(4)]
    control = [flow(20e6, 1.5, noise=0.4, seed=40 + i, packets=False) for i in range(4)]
    est = decide.assess(target, control, "sni_swap")
    assert est.state == "clean"
    assert est.ratio == pytest.approx(1.0, abs=0.2)
    assert est.confidence is not None and est.confidence < 0.5


def test_too_little_data_is_inconclusive():
    short = [flow(140e3, 0.15, seed=1)]
    est = decide.assess(short, fast(1), "sni_swap")
    assert est.state == "inconclusive"
    assert est.p_value is None and est.confidence is None
    assert decide.assess([], [], "sni_swap").state == "inconclusive"


def test_moderate_slowdown_is_inconclusive_band():
    target = [flow(12e6, 1.5, noise=0.3, seed=i, packets=False) for i in range(4)]
    control = [flow(20e6, 1.5, noise=0.3, seed=60 + i, packets=False) for i in range(4)]
    assert decide.assess(target, control, "sni_swap").state == "inconclusive"


def test_uneven_target_rates_lower_confidence():
    steady = decide.assess(policed(3), fast(3), "sni_swap")
    uneven_target = [flow(r, 1.5, seed=i) for i, r in enumerate((60e3, 140e3, 300e3))]
    uneven = decide.assess(uneven_target, fast(3), "sni_swap")
    assert decide.flat([r.steady_bps for r in policed(3)]) is True
    assert decide.flat([r.steady_bps for r in uneven_target]) is False
    assert uneven.confidence < steady.confidence


def test_decide_early_within_a_megabyte_and_five_seconds():
    targets, controls, decided = [], [], None
    for i in range(8):
        targets.append(policed(1, seed=10 * i)[0])
        controls.append(fast(1, seed=200 + i)[0])
        decided = decide.decide_early(targets, controls, "sni_swap")
        if decided is not None:
            break
    assert decided is not None and decided.state == "throttled"
    assert decided.bytes_used < 1_000_000
    assert sum(r.samples[-1][0] for r in targets) <= 5.0
    assert decide.decide_early(policed(1), fast(1), "sni_swap") is None  # one pair never


def test_decide_early_clean_when_equal():
    target = [flow(50e6, 0.5, max_bytes=256 << 10, noise=0.3, seed=i) for i in range(3)]
    control = [flow(50e6, 0.5, max_bytes=256 << 10, noise=0.3, seed=9 + i) for i in range(3)]
    decided = decide.decide_early(target, control, "sni_swap")
    assert decided is not None and decided.state == "clean"


def test_mann_whitney_matches_definition():
    u, p = decide.mann_whitney_less([1, 2, 3], [4, 5, 6])
    assert u == 9 and p < 0.05
    u, p = decide.mann_whitney_less([4, 5, 6], [1, 2, 3])
    assert u == 0 and p > 0.95
    assert decide.mann_whitney_less([2], [2])[0] == 0.5


def _scaled(run: ThroughputResult, k: float) -> ThroughputResult:
    samples = tuple((t, b * k) for t, b in run.samples)
    return ThroughputResult(url=run.url, samples=samples, bytes_received=run.bytes_received,
                            goodput_bps=goodput(samples),
                            steady_bps=goodput(steady_samples(samples)))


def _stepped(increments: list[int]) -> ThroughputResult:
    """Samples every 1/8 s (exact in binary) with the given byte increments."""
    cum, samples = 0, [(0.0, 0)]
    for i, inc in enumerate(increments, start=1):
        cum += inc
        samples.append((i / 8, cum))
    return ThroughputResult(url="u", samples=tuple(samples), bytes_received=cum,
                            goodput_bps=goodput(tuple(samples)),
                            steady_bps=goodput(steady_samples(tuple(samples))))


_flows = st.lists(st.lists(st.integers(0, 200_000), min_size=1, max_size=24),
                  min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(_flows, _flows, st.integers(0, 12), st.sampled_from([None, 1e6, 50e6]))
def test_slower_target_never_looks_less_throttled(targets, controls, halvings, expected):
    """Scale target rates by 2**-n (exact in floating point): nothing may improve."""
    t_runs = [_stepped(f) for f in targets]
    c_runs = [_stepped(f) for f in controls]
    k = 2.0 ** -halvings
    before = decide.assess(t_runs, c_runs, "sni_swap", expected_bps=expected)
    after = decide.assess([_scaled(r, k) for r in t_runs], c_runs, "sni_swap",
                            expected_bps=expected)
    rank = decide.STATES.index
    assert rank(after.state) >= rank(before.state)
    if before.ratio is not None:
        assert after.ratio <= before.ratio
        assert after.p_value <= before.p_value
        assert after.confidence >= before.confidence


def _run(samples, failure=None):
    return ThroughputResult(t0=0.0, elapsed=1.0, url="https://x/", failure=failure,
                            samples=tuple(samples), bytes_received=samples[-1][1] if samples else 0,
                            goodput_bps=goodput(tuple(samples)),
                            steady_bps=goodput(steady_samples(tuple(samples))))


def test_a_flow_outlasts_a_burst_by_a_knee_and_a_second_past_it_or_by_its_time_limit():
    burst_then_rate = [(0.0, 0), (0.05, 100_000)] + [(0.05 + i / 10, 100_000 + 1750 * i)
                                                      for i in range(1, 16)]
    assert decide.outlasted(_run(burst_then_rate), 1 << 20)
    short = burst_then_rate[:6]  # 0.5 s past the knee
    assert not decide.outlasted(_run(short), 1 << 20)
    fast = [(0.0, 0), (0.01, 1 << 20)]  # all of it at line rate: fits in any burst
    assert not decide.outlasted(_run(fast), 1 << 20)
    slow = [(i / 10, 10_000 * i) for i in range(13)]  # cut by time after 1.2 s, no knee
    assert decide.outlasted(_run(slow), 1 << 20)
    assert not decide.outlasted(_run([], failure="connection_reset"), 1 << 20)


def test_conclude_without_an_outlasting_pair_is_bounded_never_clean():
    fast = _run([(0.0, 0), (0.01, 1 << 20)])
    estimate = decide.conclude([fast], [fast], 0, "sni_swap", "the data budget ended")
    assert (estimate.state, estimate.outlasted_burst) == ("bounded", False)
    assert estimate.excluded_below_bps == pytest.approx(8 * (1 << 20) / 2.01)
    assert estimate.reason.startswith("no policing below 4.2 Mbit/s seen")
    assert "the data budget ended" in estimate.reason


def test_one_outlasting_pair_is_not_enough_for_throttled():
    policed = _run([(0.0, 0), (0.05, 100_000)] + [(0.05 + i / 10, 100_000 + 1750 * i)
                                                   for i in range(1, 31)])
    control = _run([(0.0, 0), *((i / 1000, 100_000 * i) for i in range(1, 11))])
    one = decide.conclude([policed], [control], 1, "sni_swap", "the data budget ended")
    assert one.state == "inconclusive" and "only 1 pair" in one.reason
    two = decide.conclude([policed] * 2, [control] * 2, 2, "sni_swap", "")
    assert two.state == "throttled" and two.outlasted_burst
    assert two.rate_bps == pytest.approx(140e3, rel=0.01)
