"""The cheap throttling screen every reachable target gets, and the run's data budget.

One target-SNI flow of SCREEN_BYTES to the helper's bulk endpoint, just past the small burst of
a policer like the 2021 Twitter throttler (about 17 kB, one second at 140 kbit/s), compared with
a control-SNI flow of the same size. The control flow is shared by the targets screened within
CONTROL_MAX_AGE_S and CONTROL_MAX_USES (the path to the helper is the same for all of them), so a
screen costs one flow per target. A target is a suspect when its flow bent at a knee or ran at
less than SUSPECT_RATIO of the control; suspects (and hosts a list marks as media) get the full
adaptive A/B (probe.throttling.abtest). A screen that saw nothing says what it ruled out
("bounded"), never "clean": a 64 KiB flow fits in the burst of any policer above ~0.3 Mbit/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from probe.model import Settings, ThrottleEstimate, ThroughputRequest, ThroughputResult
from probe.throttling import abtest, decide, rates

SCREEN_BYTES = 64 << 10
SCREEN_SECONDS = 3.0
SUSPECT_RATIO = 0.5
SUSPECT_BELOW_BPS = 5e6  # a 64 KiB flow any faster was not held back by a policer it outlasted
CONTROL_MAX_AGE_S = 30.0
CONTROL_MAX_USES = 25


@dataclass
class ControlReference:
    """The control flow screens compare with, refreshed when old or used often."""

    run: ThroughputResult | None = None
    at: float = 0.0
    uses: int = 0

    def stale(self, now: float) -> bool:
        return (self.run is None or now - self.at > CONTROL_MAX_AGE_S
                or self.uses >= CONTROL_MAX_USES)


def suspect(target: ThroughputResult, control: ThroughputResult | None) -> bool:
    """A knee, or a flow well below the control's: worth the full A/B."""
    if rates.knee(target.samples) is not None:
        return True
    if control is None or control.goodput_bps is None:
        return False
    if target.goodput_bps is None:
        return target.failure is not None and target.bytes_received > 0
    return (target.goodput_bps < SUSPECT_RATIO * control.goodput_bps
            and target.goodput_bps < SUSPECT_BELOW_BPS)


async def screen(url: str, address: str | None, target_sni: str, control_sni: str,
                 settings: Settings, reference: ControlReference
                 ) -> tuple[tuple[ThroughputResult, ...], bool, ThrottleEstimate]:
    """(flows, is it a suspect?, the estimate when it is not)."""
    request = ThroughputRequest(url, address=address, sni=target_sni)
    run = await abtest.flow(request, settings, SCREEN_BYTES, SCREEN_SECONDS, True)
    flows = (run,)
    if reference.stale(time.monotonic()):
        control = ThroughputRequest(url, address=address, sni=control_sni)
        reference.run = await abtest.flow(control, settings, SCREEN_BYTES, SCREEN_SECONDS, True)
        reference.at, reference.uses = time.monotonic(), 0
        flows = (run, reference.run)
    reference.uses += 1
    estimate = decide.bounded(
        (run,), (reference.run,) if reference.run else (), "screen",
        "one screening flow only (the full A/B runs for suspects and media hosts)")
    if run.failure is not None and run.bytes_received == 0:
        estimate = decide.assess((run,), (), "screen")  # inconclusive: nothing came back
    return flows, suspect(run, reference.run), estimate


@dataclass
class RunBudget:
    """The run's data budget for throughput tests, and the account of what it bought."""

    total_bytes: int
    used: int = 0
    screened: int = 0
    full: int = 0
    skipped: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # estimate state -> targets

    def left(self) -> int:
        return max(0, self.total_bytes - self.used)

    def for_full_test(self, per_target: int) -> int:
        """A full A/B may take half of what is left, so later targets can still be screened."""
        return min(per_target, self.left() // 2)

    def spend(self, flows: tuple[ThroughputResult, ...]) -> None:
        self.used += sum(f.bytes_received for f in flows)

    def summary(self) -> str:
        return (f"throughput: {self.screened} targets screened, {self.full} got the full A/B, "
                f"{self.skipped} not tested (data budget spent); "
                f"{self.used / 1e6:.1f} of {self.total_bytes / 1e6:.0f} MB used")
