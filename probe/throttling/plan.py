"""Which throughput tests a reachable target gets, and the one estimate its verdict uses.

Cost first: every target gets the cheap screen (probe.throttling.screen: one short target-SNI
flow against a shared control flow); only suspects and hosts the list marks `media` get the full
adaptive A/B, within what is left of the run's data budget (`RunBudget`). Order of the full
tests: the SNI-swap A/B against the helper (same server, same bytes, only the SNI differs: the
strongest evidence); then, only if that was not decisive or there is no helper, the direct test
(a real object of the target against a control object of similar size). Both share one data
budget per target. The target's own history gives the rate the control side is expected to
reach (`baseline`), so that a control far below its usual rate marks the run `degraded` (a slow
link) rather than letting a volunteer's bad evening look like anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

from probe.helper_api import BULK_PATH
from probe.measure import dns
from probe.model import Settings, Target, ThrottleEstimate, ThroughputResult
from probe.throttling import abtest, baseline, decide, screen

RateHistory = Callable[[str], Sequence[tuple[float, float]]]  # domain -> (time, control bps)
DECISIVE = frozenset({"throttled", "clean"})


@dataclass(frozen=True)
class Paths:
    """Where the flows go: the helper's bulk URL and address (SNI-swap), if any."""

    bulk_url: str | None = None
    bulk_address: str | None = None
    control_sni: str | None = None


def expected_rate(target: Target, history: RateHistory | None) -> float | None:
    """The control rate this target's runs usually see (None during warm-up or without history)."""
    if history is None:
        return None
    return baseline.baseline(sorted(history(target.domain)))


def strongest(estimates: Sequence[ThrottleEstimate]) -> ThrottleEstimate | None:
    """The most severe state wins (throttled > degraded > inconclusive > clean), then confidence."""
    if not estimates:
        return None
    return max(estimates, key=lambda e: (decide.STATES.index(e.state), e.confidence or 0.0))


async def measure(
    target: Target, host: str, paths: Paths, settings: Settings, budget: int,
    history: RateHistory | None = None,
) -> tuple[tuple[ThroughputResult, ...], ThrottleEstimate | None]:
    """The full tests: every flow measured for the target, and the estimate its verdict uses."""
    expected = expected_rate(target, history)
    flows: list[ThroughputResult] = []
    estimates: list[ThrottleEstimate] = []
    if paths.bulk_url:
        targets, controls, estimate = await abtest.sni_swap(
            paths.bulk_url, paths.bulk_address, host, paths.control_sni, settings,
            abtest.Budget(total_bytes=budget), expected_bps=expected,
        )
        flows += [*targets, *controls]
        estimates.append(estimate)
    left = budget - sum(f.bytes_received for f in flows)
    undecided = not estimates or estimates[-1].state not in DECISIVE
    if undecided and target.throughput_url and target.control_throughput_url and left > 0:
        targets, controls, estimate = await abtest.direct(
            target.throughput_url, target.control_throughput_url, settings,
            abtest.Budget(total_bytes=left), expected_bps=expected,
        )
        flows += [*targets, *controls]
        estimates.append(estimate)
    return tuple(flows), strongest(estimates)


def spent(budget: screen.RunBudget) -> ThrottleEstimate:
    return ThrottleEstimate(
        state="not_measured", method="none",
        reason=f"the run's data budget ({budget.total_bytes / 1e6:.0f} MB, --data-budget) "
               "was spent before this target")


class ThroughputTests:
    """The throughput tests of one run: the helper's bulk endpoint (its address resolved once,
    so every SNI-swap flow goes to the same server), the budgets, the screen's shared control
    flow and the rate history."""

    def __init__(self, helper_url: str | None, budget: int, history: RateHistory | None,
                 data_budget: int = 256 << 20) -> None:
        self.helper_url, self.budget, self.history = helper_url, budget, history
        self.run_budget = screen.RunBudget(data_budget)
        self.reference = screen.ControlReference()
        self._address: str | None = None  # flows run one at a time: no lock needed

    def possible(self, target: Target) -> bool:
        """SNI-swap needs a helper; the direct test needs both objects named in the list."""
        return bool(self.helper_url or (target.throughput_url and target.control_throughput_url))

    async def measure(
        self, target: Target, host: str, control_sni: str, settings: Settings
    ) -> tuple[tuple[ThroughputResult, ...], ThrottleEstimate | None]:
        """The screen, then the full tests for a suspect or a media host, within the budget."""
        account = self.run_budget
        if account.left() < 2 * screen.SCREEN_BYTES:
            account.skipped += 1
            return (), spent(account)
        paths = Paths(control_sni=control_sni)
        flows: tuple[ThroughputResult, ...] = ()
        if self.helper_url:
            paths = Paths(bulk_url=urljoin(self.helper_url, BULK_PATH),
                          bulk_address=await self._helper_address(settings),
                          control_sni=control_sni)
            if not target.media:
                account.screened += 1
                flows, suspect, estimate = await screen.screen(
                    paths.bulk_url or "", paths.bulk_address, host, control_sni, settings,
                    self.reference)
                account.spend(flows)
                if not suspect:
                    return flows, estimate
        account.full += 1
        more, estimate = await measure(target, host, paths, settings,
                                       account.for_full_test(self.budget), self.history)
        account.spend(more)
        if estimate is not None:  # the screen's bytes were spent on this verdict too
            estimate = replace(estimate, bytes_used=estimate.bytes_used + sum(
                f.bytes_received for f in flows))
        return (*flows, *more), estimate
    async def _helper_address(self, settings: Settings) -> str:
        if self._address is None:
            host = urlsplit(self.helper_url or "").hostname or ""
            self._address = await dns.address_of(host, settings) or host
        return self._address
