"""probe.throttling.baseline: warm-up, outliers, level shifts, the rolling window."""

from __future__ import annotations

import pytest

from probe.throttling import baseline

HOUR = 3600.0


def series(rates: list[float], start: float = 1_700_000_000.0) -> list[tuple[float, float]]:
    return [(start + i * HOUR, r) for i, r in enumerate(rates)]


def test_no_judgement_during_warm_up():
    history = series([10e6] * 5)
    assert baseline.baseline(history) is None
    assert baseline.compare(5e6, history) is None
    assert baseline.rolling_median(history) == []
    history = series([10e6] * 6)
    assert baseline.baseline(history) == 10e6
    assert baseline.compare(5e6, history) == pytest.approx(0.5)
    assert len(baseline.rolling_median(history)) == 1


def test_outlier_is_replaced_not_averaged_in():
    rates = [10e6, 11e6, 9e6, 10e6, 12e6, 10e6, 0.1e6, 10e6, 0.2e6, 11e6]
    history = series(rates)
    kept = baseline.cleaned(history)
    assert len(kept) == len(history)
    assert kept[6][1] == 10e6 and kept[8][1] == 10e6  # replaced by the median before them
    assert baseline.baseline(history) == 10e6
    # order of input does not matter
    assert baseline.baseline(list(reversed(history))) == 10e6


def test_lasting_level_shift_resets_the_baseline():
    cfg = baseline.Config(shift_points=4, warmup_points=3)
    before = [20e6] * 10
    almost = series(before + [2e6] * 3)
    assert baseline.baseline(almost, config=cfg) == 20e6  # three low points are outliers
    shifted = series(before + [2e6] * 4)
    assert baseline.baseline(shifted, config=cfg) == 2e6  # the fourth makes a new normal
    assert len(baseline.cleaned(shifted, cfg)) == 4
    # a shift interrupted by a normal point is not a shift
    broken = series(before + [2e6] * 3 + [20e6] + [2e6] * 3)
    assert baseline.baseline(broken, config=cfg) == 20e6


def test_alternating_outliers_do_not_count_as_a_shift():
    cfg = baseline.Config(shift_points=3, warmup_points=3)
    history = series([10e6] * 6 + [1e6, 100e6, 1e6, 100e6, 1e6])
    assert baseline.baseline(history, config=cfg) == 10e6


def test_window_forgets_old_points():
    cfg = baseline.Config(window_s=24 * HOUR, warmup_points=3)
    history = series([50e6] * 30)
    assert baseline.baseline(history, config=cfg) == 50e6
    later = history[-1][0] + 48 * HOUR
    assert baseline.baseline(history, now=later, config=cfg) is None
    assert baseline.baseline([], config=cfg) is None
