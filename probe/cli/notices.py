"""What a run tells the person on stderr besides its results: whom it contacts, what it could not
use, and what it did not measure. One line each, said once per run."""

from __future__ import annotations

from collections.abc import Iterable

from probe import controls
from probe.health import Health
from probe.model import TargetMeasurement

HELPER_DOCS = "docs/helper.md"


def contacts(chosen: controls.Controls) -> list[str]:
    """The third parties this run talks to (besides the targets) and what they learn."""
    parties = controls.third_parties(chosen)
    if not parties:
        return ["probe: no controls configured: nothing is sent to third parties, and a failure "
                "cannot be told apart from an outage (see --control-resolver, --th, --helper)"]
    return ["probe: besides the targets, this run contacts (--no-third-party turns the public defaults off):",
            *(f"probe:   {line}" for line in parties)]


def unreachable_controls(health: Health) -> list[str]:
    if health.reachable or not health.unreachable:
        return []
    return [f"probe: warning: no control could be reached ({', '.join(health.unreachable)}); "
            "verdicts that need one will be inconclusive"]


def after_run(results: Iterable[TargetMeasurement], health: Health | None) -> list[str]:
    """Verdicts that could not use a control, and throttling that was not measured."""
    lines = []
    results = list(results)
    if health is not None and health.unreachable and not health.reachable:
        names = [m.target.domain for m in results if m.verdict and m.verdict.verdict == "inconclusive"]
        if names:
            lines.append(f"probe: {len(names)} verdicts could not use a control: "
                         f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
    skipped = [m for m in results if m.verdict and m.verdict.throttling
               and m.verdict.throttling.state == "not_measured"]
    if skipped:
        reason = skipped[0].verdict.throttling.reason  # type: ignore[union-attr]
        lines.append(f"probe: throttling was not measured for {len(skipped)} targets ({reason}); "
                     f"a helper with a bulk endpoint measures it: see {HELPER_DOCS}")
    return lines
