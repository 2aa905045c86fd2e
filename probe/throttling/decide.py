"""Is the target differentially slowed? Pure statistics over target and control flows.

The question is the one Xue et al. (IMC 2021) answered for Twitter in Russia: flows that carry
the target's SNI (or its real objects) against control flows over the same path, interleaved in
time. What we compare, and why:

* Samples: per-interval download rates (bits/s between consecutive memoryless samples, see
  probe.throttling.rates) from the steady part of every flow, pooled per side. A policer lets
  a burst through and then holds a flat rate, so the burst is left out.
* Test: a one-sided Mann-Whitney U test, "target rates are stochastically smaller than control
  rates". It is rank based, so it is indifferent to the heavy tails and the quantisation of short
  intervals (a flow policed at 140 kbit/s delivers about one packet per 100 ms interval), and
  one-sided because a faster target is not our business. Wehe uses a two-sided KS test, which
  also fires when the rates merely differ in shape (a flat policed flow against a bursty control
  with the same median); we keep KS's companion, an effect size, instead. The p-value is the
  normal approximation with continuity correction and WITHOUT scipy's tie correction or its
  switch to the exact distribution: both make p jump when values tie, and we want p to be a
  monotone function of U (a slower target never looks less throttled). Interval rates within
  one flow are not independent, so p is a score, not an exact error rate; the effect size and
  the interleaving of A and B guard against that.
* Effect size: ratio = median target rate / median control rate, where a flow's rate is its
  steady rate over the whole steady window (`steady_bps`), not a short interval: bytes are
  counted as TLS records are decrypted (up to 16 KiB each), so at 140 kbit/s one record lands
  every ~0.9 s and most 100 ms intervals read 0. The quantisation hits target and control alike
  under the null hypothesis, so the rank test stays fair, but the median of interval rates would
  say 0. (Wehe's "area" is 1 - ratio of the means.) Throttled needs both p < alpha and
  ratio <= RATIO_THROTTLED (0.5, Wehe's client area threshold).
* Shape: a policer gives every flow the same converged rate; congestion does not. When the
  per-flow steady rates of the target vary little (coefficient of variation < FLAT_CV) the
  estimate keeps full confidence; otherwise its confidence is discounted.
* Everything slow is not throttling: when the control is slow too (below half the expected rate,
  or below SLOW_FLOOR_BPS when no expected rate is known) the state is "degraded", unless the
  target is far slower still (ratio <= RATIO_STRONG).
* Fast is not throttled: when the target's flows complete at FAST_GOODPUT_BPS or more (whole
  flow, burst included), a "throttled" reading is noise (on a loaded CPU a gigabit flow of
  128 KiB can look ten times slower than its twin) and is reported as inconclusive.
* Early stopping: `decide_early` is consulted after every A/B pair. Peeking repeatedly inflates
  false positives, so an early "throttled" needs p < EARLY_ALPHA (0.01), and an early "clean"
  needs p >= ALPHA.

Reach (`outlasted`, `conclude`): a flow that fits in a policer's burst tells nothing about that
policer, so the adaptive A/B (probe.throttling.abtest) grows its flows until a target flow
outlasts any plausible burst: it bends at a knee and runs MIN_STEADY_S beyond it, or it runs
MIN_STEADY_S and is cut by its time limit (slow from the start: shaping, or a slow link). Only
such pairs are judged; "throttled" needs MIN_PAIRS_THROTTLED of them. When no target flow
outlasted a burst, the estimate is "bounded": the rate below which policing would have been
seen (probe.throttling.rates.excluded_below), never "clean".

`confidence` is the strength of the evidence that the target is slowed (0 none .. 1 certain),
whatever the state: (1 - p) x effect x shape, where effect grows linearly from 0 at ratio 1 to 1
at ratio RATIO_THROTTLED.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from statistics import median

import numpy as np
from scipy.stats import norm

from probe.model import ThrottleEstimate, ThroughputResult
from probe.throttling import rates
from probe.throttling.rates import interval_rates

ALPHA = 0.05
EARLY_ALPHA = 0.01
RATIO_THROTTLED = 0.5
RATIO_STRONG = 0.25
RATIO_CLEAN = 0.7
SLOW_FRACTION = 0.5
SLOW_FLOOR_BPS = 1e6
FLAT_CV = 0.25
FAST_GOODPUT_BPS = 50e6  # target flows this fast are never called throttled
UNEVEN_DISCOUNT = 0.8
MIN_TARGET_INTERVALS = 3  # a fast flow may give only one interval: three flows suffice
MIN_CONTROL_INTERVALS = 2
MIN_PAIRS_EARLY = 2
MIN_STEADY_S = 1.0  # a flow must run this long past its knee (or its start) to count
MIN_PAIRS_THROTTLED = 2

STATES = ("clean", "bounded", "inconclusive", "degraded", "throttled")


def mann_whitney_less(target: Sequence[float], control: Sequence[float]) -> tuple[float, float]:
    """(U, one-sided p) for "target < control"; U counts pairs with t < c, ties as one half."""
    t = np.asarray(target, dtype=float)[:, None]
    c = np.asarray(control, dtype=float)[None, :]
    u = float((t < c).sum() + 0.5 * (t == c).sum())
    n1, n2 = t.shape[0], c.shape[1]
    mu = n1 * n2 / 2.0
    sigma = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    return u, float(norm.sf((u - mu - 0.5) / sigma))


def flat(steady_rates: Sequence[float]) -> bool | None:
    """Do the flows share one converged rate (policing)? None with fewer than two flows."""
    if len(steady_rates) < 2:
        return None
    mean = sum(steady_rates) / len(steady_rates)
    if mean <= 0:
        return False
    sd = math.sqrt(sum((r - mean) ** 2 for r in steady_rates) / (len(steady_rates) - 1))
    return sd / mean < FLAT_CV


def _flow_rates(runs: Sequence[ThroughputResult]) -> list[float]:
    return [r.steady_bps for r in runs if r.steady_bps is not None]


def _pooled(runs: Sequence[ThroughputResult]) -> list[float]:
    return [r for run in runs for r in interval_rates(run.samples)]


def _confidence(p: float, ratio: float, is_flat: bool | None) -> float:
    effect = min(1.0, max(0.0, (1.0 - ratio) / (1.0 - RATIO_THROTTLED)))
    return (1.0 - p) * effect * (1.0 if is_flat else UNEVEN_DISCOUNT)


def _finished_fast(target_runs: Sequence[ThroughputResult]) -> bool:
    """Target flows that completed at FAST_GOODPUT_BPS or more (burst included) were not held
    back in any way a user would see, and flows that short (a 128 KiB flow at 1 Gbit/s lasts
    about a millisecond) time the scheduler more than the network: no "throttled" from them."""
    goodputs = [r.goodput_bps for r in target_runs if r.goodput_bps is not None]
    return bool(goodputs) and median(goodputs) >= FAST_GOODPUT_BPS


def _state(p: float, ratio: float, rate: float, control: float, alpha: float,
           expected_bps: float | None) -> str:
    slow = SLOW_FRACTION * expected_bps if expected_bps else SLOW_FLOOR_BPS
    control_slow = control < slow
    if p < alpha and ratio <= RATIO_THROTTLED:
        return "throttled" if not control_slow or ratio <= RATIO_STRONG else "degraded"
    if control_slow and rate < slow:
        return "degraded"
    if p >= alpha and ratio >= RATIO_CLEAN:
        return "clean"
    return "inconclusive"


def assess(
    target_runs: Sequence[ThroughputResult],
    control_runs: Sequence[ThroughputResult],
    method: str,
    *,
    expected_bps: float | None = None,
    alpha: float = ALPHA,
) -> ThrottleEstimate:
    """Compare target flows with control flows (see the module doc for the rules)."""
    target, control = _pooled(target_runs), _pooled(control_runs)
    used = sum(r.bytes_received for r in (*target_runs, *control_runs))
    base = {"method": method, "bytes_used": used, "samples": len(target) + len(control)}
    if len(target) < MIN_TARGET_INTERVALS or len(control) < MIN_CONTROL_INTERVALS:
        rates, controls = _flow_rates(target_runs), _flow_rates(control_runs)
        return ThrottleEstimate(state="inconclusive", rate_bps=median(rates) if rates else None,
                                control_rate_bps=median(controls) if controls else None,
                                ratio=None, p_value=None, confidence=None, **base)
    rate, control_rate = median(_flow_rates(target_runs)), median(_flow_rates(control_runs))
    ratio = rate / control_rate if control_rate > 0 else 1.0
    _, p = mann_whitney_less(target, control)
    is_flat = flat(_flow_rates(target_runs))
    state = _state(p, ratio, rate, control_rate, alpha, expected_bps)
    if state == "throttled" and _finished_fast(target_runs):
        state = "inconclusive"
    return ThrottleEstimate(
        state=state,
        rate_bps=rate,
        control_rate_bps=control_rate,
        ratio=ratio,
        p_value=p,
        confidence=_confidence(p, ratio, is_flat),
        **base,
    )


def decide_early(
    target_runs: Sequence[ThroughputResult],
    control_runs: Sequence[ThroughputResult],
    method: str,
    *,
    expected_bps: float | None = None,
) -> ThrottleEstimate | None:
    """The estimate once the data suffice for a decision, else None (measure another pair)."""
    if min(len(target_runs), len(control_runs)) < MIN_PAIRS_EARLY:
        return None
    strict = assess(target_runs, control_runs, method, expected_bps=expected_bps,
                    alpha=EARLY_ALPHA)
    if strict.state == "throttled":
        return strict
    loose = assess(target_runs, control_runs, method, expected_bps=expected_bps)
    return loose if loose.state in ("clean", "degraded") else None


def outlasted(run: ThroughputResult, max_bytes: int) -> bool:
    """Did this flow run past any plausible burst (see the module doc)? `max_bytes`: what the
    flow was allowed to read (a flow that got all of it in time was not held back)."""
    if run.failure is not None and run.bytes_received == 0:
        return False
    if rates.steady_seconds(run.samples) >= MIN_STEADY_S:
        return True
    lasted = run.samples[-1][0] if run.samples else 0.0
    return run.bytes_received < max_bytes and lasted >= MIN_STEADY_S


def megabits(bps: float) -> str:
    return f"{bps / 1e6:.2g} Mbit/s" if bps >= 1e6 else f"{bps / 1e3:.0f} kbit/s"


def bounded(target_runs: Sequence[ThroughputResult], control_runs: Sequence[ThroughputResult],
            method: str, why: str) -> ThrottleEstimate:
    """No target flow outlasted a burst: say which policers were ruled out, and why no more."""
    below = max((rates.excluded_below(r.samples) for r in target_runs), default=0.0)
    flows = [r.steady_bps for r in target_runs if r.steady_bps is not None]
    controls = [r.steady_bps for r in control_runs if r.steady_bps is not None]
    return ThrottleEstimate(
        state="bounded", method=method, rate_bps=median(flows) if flows else None,
        control_rate_bps=median(controls) if controls else None,
        bytes_used=sum(r.bytes_received for r in (*target_runs, *control_runs)),
        samples=sum(len(r.samples) for r in (*target_runs, *control_runs)),
        outlasted_burst=False, excluded_below_bps=below,
        reason=f"no policing below {megabits(below)} seen (bursts up to "
               f"{rates.PLAUSIBLE_BURST_S:g} s at the rate); {why}",
    )


def conclude(target_runs: Sequence[ThroughputResult], control_runs: Sequence[ThroughputResult],
             judged: int, method: str, why: str, *,
             expected_bps: float | None = None) -> ThrottleEstimate:
    """The estimate of an adaptive A/B: the last `judged` pairs outlasted a burst (0: none did,
    `why` says what ended the test first)."""
    if judged == 0:
        return bounded(target_runs, control_runs, method, why)
    targets, controls = target_runs[-judged:], control_runs[-judged:]
    estimate = assess(targets, controls, method, expected_bps=expected_bps)
    used = sum(r.bytes_received for r in (*target_runs, *control_runs))
    note = None
    if estimate.state == "throttled" and judged < MIN_PAIRS_THROTTLED:
        note = f"only {judged} pair outlasted a burst before {why}"
        estimate = replace(estimate, state="inconclusive")
    return replace(estimate, bytes_used=used, outlasted_burst=True, reason=note)
