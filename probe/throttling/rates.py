"""Rates from a flow's samples: pure arithmetic shared by the flow (its summary) and the decision.

Samples are (seconds since the first response byte, cumulative body bytes). A policer lets its
bucket's burst through at line rate, then holds the flow to its rate: the cumulative curve bends
once, from steep to flat. `knee` finds that bend (the best two-segment fit of the curve whose
second slope is at most KNEE_RATIO of the first, with KNEE_MIN_AFTER of the flow's time after
it: a stall just before a flow's end is no burst); the steady part is what follows it. Without
a knee the steady part skips the first `STEADY_SKIP_S` (1 s), or the first
`STEADY_SKIP_FRACTION` (30 %) of a transfer shorter than ~3.3 s.

The steady rate (`steady_rate`). The count is TCP's in-order bytes, so it rises in lumps: a
shaper (htb) releases 5-13 packets at a time, a loss holds back what arrives after it until the
retransmission fills the hole. At 140 kbit/s a 3 s window holds only 4-6 such lumps, and a
line fitted through every sample rides them (the flat samples before a late lump pull it up:
1.05-1.25x the shaper's rate in the lab). So the line is fitted through the lump starts only
(the time of each rise, the count just before it: one point per lump, each at the same phase).
A flow without a knee (a shaper: no burst) whose steady part holds fewer than LUMPS_WHOLE lumps
is fitted through the lump starts of the whole flow: at 64 kbit/s the second skipped holds a
third of a 4 s flow's lumps (the shaper's most regular ones, before TCP's first losses), and
the three left read 0.71x.

The rate is never above the `ceiling`, the chord from the steady part's first sample to the
last rise of the count, and that is what keeps a policer from being over-read: once its bucket
is empty (at the knee) it lets through at most its rate times the window, so the chord exceeds
the rate only by what was left of the burst and what TCP held out of order (arrived behind a
hole, counted later) at the window's start, spread over the window
(tests/test_throttling_rates.py checks the bound on policed flows counted in random lumps).
"""

from __future__ import annotations

STEADY_SKIP_S = 1.0
STEADY_SKIP_FRACTION = 0.3
KNEE_RATIO = 0.25  # the rate after a knee is at most this fraction of the rate before it
# (a burst passes at line rate, many times the policed rate; a lumpy slow flow bends less)
KNEE_MIN_SAMPLES = 3  # samples after the knee (the knee itself included)
KNEE_MIN_AFTER = 0.25  # ... spanning at least this fraction of the flow's time
LUMPS_MIN = 3  # rises of the count the steady rate is fitted through, at least
LUMPS_WHOLE = 6  # fewer in the steady part of a flow without a knee: fit the whole flow's
# lumps only where the count stands still between samples at least this often: a count that
# rises at nearly every sample flows, and a line through lump starts (one per rise, each a
# sample late) would only add the sampling's jitter (a paced 2.6 Mbit/s flow read 0.85x)
LUMPY_RISES = 0.5
PLAUSIBLE_BURST_S = 2.0  # the largest policer burst we claim to see through, at its own rate

Samples = tuple[tuple[float, int], ...]


def goodput(samples: Samples) -> float | None:
    """Bits per second from the first to the last sample, None when no time elapsed."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    return 8.0 * (b1 - b0) / (t1 - t0)


def _chord_error(samples: Samples, first: int, last: int) -> float:
    """Squared byte error of the straight line from samples[first] to samples[last]."""
    (t0, b0), (t1, b1) = samples[first], samples[last]
    if t1 <= t0:
        return 0.0
    slope = (b1 - b0) / (t1 - t0)
    return sum((b - b0 - slope * (t - t0)) ** 2 for t, b in samples[first + 1:last])


def knee(samples: Samples) -> int | None:
    """The index of the sample where a fast start turns into a rate at most KNEE_RATIO of it,
    None when the flow never bends that way (see the module doc)."""
    n = len(samples)
    if n < KNEE_MIN_SAMPLES + 1:
        return None
    best, best_error = None, float("inf")
    latest = samples[-1][0] - KNEE_MIN_AFTER * (samples[-1][0] - samples[0][0])
    for i in range(1, n - KNEE_MIN_SAMPLES + 1):
        if samples[i][0] > latest:  # a stall just before the end, not a burst then a rate
            break
        before, after = goodput(samples[: i + 1]), goodput(samples[i:])
        if not before or not after or after > KNEE_RATIO * before:  # a stall is no rate
            continue
        error = _chord_error(samples, 0, i) + _chord_error(samples, i, n - 1)
        if error < best_error:
            best, best_error = i, error
    if best is None or best_error > 0.5 * _chord_error(samples, 0, n - 1):
        return None  # a bend that explains little: noise, not a burst then a rate
    return best


def _steady(samples: Samples) -> tuple[Samples, bool]:
    """(the samples after the initial burst, did the flow bend at a knee?)."""
    if len(samples) < 2:
        return samples, False
    bend = knee(samples)
    if bend is not None:
        return samples[bend:], True
    skip = min(STEADY_SKIP_S, STEADY_SKIP_FRACTION * samples[-1][0])
    rest = tuple(s for s in samples if s[0] >= skip)
    return (rest if len(rest) >= 2 else (samples[0], samples[-1])), False


def steady_samples(samples: Samples) -> Samples:
    """The samples after the initial burst (see the module doc); all of them if too few remain."""
    return _steady(samples)[0]


def _slope(points: Samples) -> float | None:
    """Bits per second of the least-squares line through the points (None without spread)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_b = sum(b for _, b in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    return 8.0 * sum((t - mean_t) * (b - mean_b) for t, b in points) / spread


def lump_starts(samples: Samples) -> Samples:
    """(time of each rise of the count, the count just before it): one point per lump."""
    return tuple((t, before) for (_, before), (t, b) in zip(samples, samples[1:], strict=False)
                 if b > before)


def ceiling(samples: Samples) -> float | None:
    """Bits per second from the first sample to the last rise of the count (a flat tail, the
    flow cut between two lumps, is left out): the most a policer whose bucket was empty at the
    first sample can have delivered, plus what TCP held out of order then (see the module doc)."""
    return goodput(_to_last_rise(samples))


def _to_last_rise(samples: Samples) -> Samples:
    """The samples up to the last rise of the count (all of them if it never rises)."""
    rises = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    return samples[: rises[-1] + 1] if rises else samples


def steady_rate(samples: Samples) -> float | None:
    """Bits per second of the steady part (see the module doc): the least-squares slope through
    its lump starts (through the whole flow's when it has no knee and the steady part fewer than
    LUMPS_WHOLE), at most its `ceiling`; with fewer than LUMPS_MIN lumps the slope through all
    its samples, and the chord when fewer than four samples remain. A count that rises at more
    than LUMPY_RISES of its samples flows: the slope through its samples up to the last rise."""
    steady, bent = _steady(samples)
    if len(steady) < 4:
        return goodput(steady)
    starts = lump_starts(steady)
    if len(starts) > LUMPY_RISES * (len(steady) - 1):  # a flowing count: every sample counts
        fit = _slope(_to_last_rise(steady))
    else:
        if not bent and len(starts) < LUMPS_WHOLE:
            starts = lump_starts(samples)
        fit = _slope(starts) if len(starts) >= LUMPS_MIN else None
        fit = _slope(steady) if fit is None else fit
    if fit is None:
        return goodput(steady)
    top = ceiling(steady)
    return fit if top is None else min(fit, top)


def steady_seconds(samples: Samples) -> float:
    """How long the flow ran after its knee (0 when it has none)."""
    bend = knee(samples)
    return 0.0 if bend is None else samples[-1][0] - samples[bend][0]


def excluded_below(samples: Samples, burst_s: float = PLAUSIBLE_BURST_S) -> float:
    """Policers slower than this (bit/s, bursts up to `burst_s` at their rate) would have bent
    this flow; 0 for a flow with no samples."""
    if len(samples) < 2:
        return 0.0
    moved = samples[-1][1] - samples[0][1]
    return 8.0 * moved / (burst_s + max(0.0, samples[-1][0] - samples[0][0]))


def interval_rates(samples: Samples) -> list[float]:
    """Bits per second of each interval between consecutive steady samples."""
    steady = steady_samples(samples)
    return [
        8.0 * (b1 - b0) / (t1 - t0)
        for (t0, b0), (t1, b1) in zip(steady, steady[1:], strict=False)
        if t1 > t0
    ]
