"""What a target's measurement means: pure rules over evidence, first match wins.

`judge` boils a TargetMeasurement down to `Facts` (probe.verdict.facts: sets and booleans,
computed once), then walks `RULES` (probe.verdict.rules, data with ids and a version) in order
and returns the verdict of the first rule whose predicate holds. No I/O, no clock: the same
measurement always gets the same verdict.
"""

from __future__ import annotations

from probe.model import TargetMeasurement, ThrottleEstimate, Verdict
from probe.verdict.facts import Facts, facts
from probe.verdict.rules import RULES, RULES_VERSION, Rule

__all__ = ["RULES", "RULES_VERSION", "Facts", "facts", "judge", "verdict_of"]


def judge(m: TargetMeasurement, throttle: ThrottleEstimate | None = None) -> Verdict:
    """The verdict of the first rule that holds (the last rule always holds)."""
    return verdict_of(facts(m, throttle))


def verdict_of(f: Facts) -> Verdict:
    """`judge` for facts already boiled down (a runner judges a target before and after its
    throughput test from the same facts: no fact reads the flows)."""
    rule = next(r for r in RULES if r.holds(f))
    return _verdict(rule, f)


def _verdict(rule: Rule, f: Facts) -> Verdict:
    return Verdict(
        verdict=rule.verdict,
        blocking=rule.blocking,
        rule=rule.id,
        rules_version=RULES_VERSION,
        reason=rule.explain(f),
        failure=rule.failure_of(f),
        throttling=f.throttle,
        decided_by=rule.control_of(f),
        notes=f.notes,
    )
