"""The terminal table's rate column says what a throttling estimate found or ruled out."""

from __future__ import annotations

import dataclasses

import pytest
from factories import measurement
from rich.console import Console

from probe.model import ThrottleEstimate, Verdict
from probe.results.tables import verdict_table


def _rendered(estimate: ThrottleEstimate) -> str:
    verdict = Verdict(verdict="accessible", reason="reachable.", throttling=estimate)
    m = dataclasses.replace(measurement(), verdict=verdict)
    console = Console(width=200, record=True)
    console.print(verdict_table([m]))
    return console.export_text()


@pytest.mark.parametrize("estimate, shown", [
    (ThrottleEstimate(state="bounded", method="sni_swap", excluded_below_bps=4.2e6),
     "no policing < 4.2 Mbit/s"),
    (ThrottleEstimate(state="not_measured", method="none", reason="budget"), "not measured"),
    (ThrottleEstimate(state="clean", method="sni_swap", rate_bps=9e7, control_rate_bps=9.1e7),
     "90.0 Mbit/s / 91.0 Mbit/s"),
])
def test_the_rate_column(estimate: ThrottleEstimate, shown: str) -> None:
    assert shown in _rendered(estimate)
