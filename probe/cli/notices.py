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
    throttle_methods: dict[str, int] = field(default_factory=dict)  # screen/sni_swap/direct
    bounded: int = 0  # no flow outlasted a burst: only slow policers were ruled out
    bounded_below: float | None = None  # the weakest of those bounds

    def add(self, m: TargetMeasurement) -> None:
        v = m.verdict
        if v is None:
            return
        if v.verdict == "inconclusive":
            self.inconclusive_count += 1
            if len(self.inconclusive) < 10:
                self.inconclusive.append(m.target.domain)
        t = v.throttling
        if t is not None and t.state == "not_measured":
            self.not_measured += 1
            self.not_measured_reason = t.reason
        elif t is not None:
            self.throttle_methods[t.method] = self.throttle_methods.get(t.method, 0) + 1
        if t is not None and t.state == "bounded" and t.excluded_below_bps is not None:
            self.bounded += 1
            self.bounded_below = min(self.bounded_below or t.excluded_below_bps,
                                     t.excluded_below_bps)

    def lines(self, health: Health | None) -> list[str]:
        """Verdicts that could not use a control, and throttling that was not measured."""
        lines = []
        if (health is not None and health.unreachable and not health.reachable
                and self.inconclusive_count):
            more = " ..." if self.inconclusive_count > len(self.inconclusive) else ""
            lines.append(f"probe: {self.inconclusive_count} verdicts could not use a control: "
                         f"{', '.join(sorted(self.inconclusive))}{more}")  # not completion order
        if self.throttle_methods:
            tested = ", ".join(f"{n} by {m}" for m, n in sorted(self.throttle_methods.items()))
            lines.append(f"probe: throttling tested: {tested}")
        if self.bounded:
            lines.append(f"probe: for {self.bounded} targets no flow outlasted a policer's burst: "
                         f"policing only ruled out below {self.bounded_below / 1e6:.2g} Mbit/s "
                         "for some (`media: true` in the list gives a host the full A/B)")
        if self.not_measured:
            fix = ("a larger --data-budget measures them" if "budget" in
                   (self.not_measured_reason or "") else
                   f"a helper with a bulk endpoint measures it: see {HELPER_DOCS}")
            lines.append(f"probe: throttling was not measured for {self.not_measured} targets "
                         f"({self.not_measured_reason}); {fix}")
        return lines
