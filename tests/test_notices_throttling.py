"""The run's closing notices account for throttling: how each target was tested, what a bounded
estimate ruled out, and targets left untested because the data budget was spent."""

from __future__ import annotations

from probe.cli.notices import RunNotes
from probe.model import Evidence, Target, TargetMeasurement, ThrottleEstimate, Verdict


def measured(domain: str, estimate: ThrottleEstimate) -> TargetMeasurement:
    verdict = Verdict(verdict="accessible", throttling=estimate)
    return TargetMeasurement(target=Target(domain=domain), start_time=0.0, runtime=1.0,
                             probe=Evidence(), control=Evidence(), verdict=verdict)


def test_notices_say_what_was_tested_and_what_was_not() -> None:
    notes = RunNotes()
    notes.add(measured("a.test", ThrottleEstimate(state="bounded", method="screen",
                                                  excluded_below_bps=260e3)))
    notes.add(measured("b.test", ThrottleEstimate(state="bounded", method="sni_swap",
                                                  excluded_below_bps=37e6)))
    notes.add(measured("c.test", ThrottleEstimate(state="throttled", method="sni_swap")))
    notes.add(measured("d.test", ThrottleEstimate(
        state="not_measured", method="none",
        reason="the run's data budget (1 MB, --data-budget) was spent before this target")))
    lines = notes.lines(None)
    assert "probe: throttling tested: 1 by screen, 2 by sni_swap" in lines
    assert any("for 2 targets no flow outlasted" in line and "below 0.26 Mbit/s" in line
               for line in lines), lines
    assert any("not measured for 1 targets" in line and "a larger --data-budget" in line
               for line in lines), lines
