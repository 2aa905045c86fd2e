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
