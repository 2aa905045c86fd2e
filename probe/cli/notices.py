"""What a run tells the person on stderr besides its results: whom it contacts, what it could not
use, and what it did not measure. One line each, said once per run."""

from __future__ import annotations

from dataclasses import dataclass, field

from probe import controls
from probe.health import Health
from probe.model import TargetMeasurement

HELPER_DOCS = "docs/helper.md"
NO_RAW_SOCKETS = ("probe: censors of blocked targets are not located in this run: that needs raw "
                  "sockets (root or CAP_NET_RAW; see `probe locate`)")


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


@dataclass
class RunNotes:
    """What the end of a run says, counted as results stream by (nothing else is kept)."""

    inconclusive: list[str] = field(default_factory=list)  # the first few names only
    inconclusive_count: int = 0
    not_measured: int = 0
    not_measured_reason: str | None = None

    def add(self, m: TargetMeasurement) -> None:
        v = m.verdict
        if v is None:
            return
        if v.verdict == "inconclusive":
            self.inconclusive_count += 1
            if len(self.inconclusive) < 10:
                self.inconclusive.append(m.target.domain)
        if v.throttling is not None and v.throttling.state == "not_measured":
            self.not_measured += 1
            self.not_measured_reason = v.throttling.reason

    def lines(self, health: Health | None) -> list[str]:
        """Verdicts that could not use a control, and throttling that was not measured."""
        lines = []
        if (health is not None and health.unreachable and not health.reachable
                and self.inconclusive_count):
            more = " ..." if self.inconclusive_count > len(self.inconclusive) else ""
            lines.append(f"probe: {self.inconclusive_count} verdicts could not use a control: "
                         f"{', '.join(sorted(self.inconclusive))}{more}")  # not completion order
        if self.not_measured:
            lines.append(f"probe: throttling was not measured for {self.not_measured} targets "
                         f"({self.not_measured_reason}); a helper with a bulk endpoint measures "
                         f"it: see {HELPER_DOCS}")
        return lines
