"""What rate is normal for this target here? Pure functions over (timestamp, rate) history.

Modelled on IODA's baselines: a rolling median over a window (7 days), no judgement during a
warm-up (fewer than `warmup_points` points), outliers replaced by the median before they enter
the baseline (one bad run must not drag it), and a reset after a lasting level shift: when
`shift_points` consecutive points all fall outside the outlier band on the same side, the path
has changed (new link, new plan, or a throttle that has become the norm) and the baseline starts
again from those points. That last case is why the baseline only flags onsets; the SNI-swap A/B
test (probe.throttling.abtest) does not depend on history and is the primary evidence for throttling.

Rates are compared multiplicatively (a point is an outlier when it is more than
`outlier_factor` times above or below the median), since throughput spreads on a log scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

Point = tuple[float, float]  # (UNIX seconds, bits per second)

ALERT_RATIO = 0.8  # IODA: current / baseline below this is worth a look


@dataclass(frozen=True)
class Config:
    window_s: float = 7 * 86400.0
    warmup_points: int = 6
    outlier_factor: float = 2.5
    shift_points: int = 12


DEFAULT = Config()


def _side(rate: float, reference: float, factor: float) -> int:
    """-1 below the band, +1 above it, 0 inside."""
    if rate * factor < reference:
        return -1
    if rate > reference * factor:
        return 1
    return 0


def _window(points: Sequence[Point], end: float, window_s: float) -> list[float]:
    return [r for t, r in points if end - window_s <= t <= end]


def cleaned(history: Sequence[Point], config: Config = DEFAULT) -> list[Point]:
    """The history as the baseline uses it: outliers replaced by the median before them, and
    everything before a lasting level shift dropped. Input in any order; output by time."""
    accepted: list[Point] = []
    run: list[Point] = []  # consecutive outliers on one side, original values
    run_side = 0
    for t, rate in sorted(history):
        ref = _window(accepted, t, config.window_s)
        if len(ref) < config.warmup_points:
            accepted.append((t, rate))
            continue
        m = median(ref)
        side = _side(rate, m, config.outlier_factor)
        if side == 0:
            accepted.append((t, rate))
            run, run_side = [], 0
            continue
        run = [*run, (t, rate)] if side == run_side else [(t, rate)]
        run_side = side
        if len(run) >= config.shift_points:
            accepted, run, run_side = list(run), [], 0  # a new normal: start again from here
        else:
            accepted.append((t, m))
    return accepted


def rolling_median(history: Sequence[Point], config: Config = DEFAULT) -> list[Point]:
    """(t, baseline at t) for every point, None-free: points still in warm-up are left out."""
    points = cleaned(history, config)
    out = []
    for t, _ in points:
        ref = _window(points, t, config.window_s)
        if len(ref) >= config.warmup_points:
            out.append((t, median(ref)))
    return out


def baseline(
    history: Sequence[Point], now: float | None = None, config: Config = DEFAULT
) -> float | None:
    """The median of the cleaned history in the window ending at `now` (default: the last
    point); None while fewer than `warmup_points` points are in the window."""
    points = cleaned(history, config)
    if not points:
        return None
    ref = _window(points, points[-1][0] if now is None else now, config.window_s)
    return median(ref) if len(ref) >= config.warmup_points else None


def compare(
    current_rate: float, history: Sequence[Point], config: Config = DEFAULT
) -> float | None:
    """current / baseline (below ALERT_RATIO is suspicious), None during warm-up."""
    base = baseline(history, None, config)
    if base is None or base <= 0:
        return None
    return current_rate / base
