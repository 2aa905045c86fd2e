"""Rates from a flow's samples: pure arithmetic shared by the flow (its summary) and the decision.

Samples are (seconds since the first response byte, cumulative body bytes). A policer lets its
bucket's burst through, then converges to a flat rate, so the steady rate skips the first
`STEADY_SKIP_S` (1 s) of the transfer, or the first `STEADY_SKIP_FRACTION` (30 %) of a transfer
shorter than ~3.3 s.
"""

from __future__ import annotations

STEADY_SKIP_S = 1.0
STEADY_SKIP_FRACTION = 0.3

Samples = tuple[tuple[float, int], ...]


def goodput(samples: Samples) -> float | None:
    """Bits per second from the first to the last sample, None when no time elapsed."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    return 8.0 * (b1 - b0) / (t1 - t0)


def steady_samples(samples: Samples) -> Samples:
    """The samples after the initial burst (see the module doc); all of them if too few remain."""
    if len(samples) < 2:
        return samples
    skip = min(STEADY_SKIP_S, STEADY_SKIP_FRACTION * samples[-1][0])
    rest = tuple(s for s in samples if s[0] >= skip)
    return rest if len(rest) >= 2 else (samples[0], samples[-1])


def interval_rates(samples: Samples) -> list[float]:
    """Bits per second of each interval between consecutive steady samples."""
    steady = steady_samples(samples)
    return [
        8.0 * (b1 - b0) / (t1 - t0)
        for (t0, b0), (t1, b1) in zip(steady, steady[1:], strict=False)
        if t1 > t0
    ]
