"""Interleaved A/B throughput tests: target flows against control flows over the same path.

`sni_swap` is the Xue et al. (IMC 2021) method: the same server and the same bytes (the helper's
`/bulk`), once with the target's SNI in the ClientHello and once with a control SNI. Only the SNI
differs, so a rate difference is the SNI's doing. `direct` compares a real object of the target
with a control object of similar size over the same path (weaker: the servers differ too).

Flows alternate A B A B so that a change of the path over time hits both sides alike; each flow
is a new connection (policers keep per-flow state). After every pair `decide.decide_early`
may end the test; the per-target budget (bytes and seconds) ends it in any case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from yarl import URL

from probe.measure import throughput
from probe.model import Settings, ThrottleEstimate, ThroughputRequest, ThroughputResult
from probe.throttling import decide

Runs = tuple[ThroughputResult, ...]


@dataclass(frozen=True)
class Budget:
    """Per target. Defaults: a 140 kbit/s policer against a fast control is decided after three
    pairs, in ~4.5 s of target flows and < 1 MiB (target flows stop at `flow_seconds`)."""

    total_bytes: int = 1 << 20
    total_seconds: float = 15.0
    flow_seconds: float = 1.5
    max_pairs: int = 4

    @property
    def flow_bytes(self) -> int:
        # every pair may run to completion within the byte budget
        return max(16 << 10, self.total_bytes // (2 * self.max_pairs))


def _budget(budget: Budget | int) -> Budget:
    return budget if isinstance(budget, Budget) else Budget(total_bytes=int(budget))


def _dead(run: ThroughputResult) -> bool:
    """A flow that got nothing (blocked, refused, helper down): more flows will not help."""
    return run.failure is not None and run.bytes_received == 0


def sized(url: str, size: int) -> str:
    """The bulk URL asking for exactly `size` bytes: the server sends what the flow reads, so
    no flow ends in a reset and no byte is sent that the budget does not count."""
    return str(URL(url).update_query(bytes=size))


async def _flow(request: ThroughputRequest, settings: Settings, budget: Budget,
                used: int, started: float, sized_bulk: bool) -> ThroughputResult | None:
    """One flow within what is left of the budget, None when nothing is left."""
    left_bytes = budget.total_bytes - used
    left_time = budget.total_seconds - (time.monotonic() - started)
    if left_bytes <= 0 or left_time <= 0.1:
        return None
    size = min(budget.flow_bytes, left_bytes)
    limited = ThroughputRequest(
        url=sized(request.url, size) if sized_bulk else request.url,
        address=request.address,
        sni=request.sni,
        max_bytes=size,
        max_seconds=min(budget.flow_seconds, left_time),
    )
    return await throughput.measure(limited, settings)


async def interleave(
    target: ThroughputRequest,
    control: ThroughputRequest,
    settings: Settings,
    budget: Budget | int,
    method: str,
    expected_bps: float | None = None,
    sized_bulk: bool = False,
) -> tuple[Runs, Runs, ThrottleEstimate]:
    """A B A B ... until decided, out of budget, or a side gets nothing at all. `sized_bulk`:
    the URLs are a bulk endpoint that takes the size of each flow (`?bytes=`)."""
    plan = _budget(budget)
    started, used = time.monotonic(), 0
    targets: list[ThroughputResult] = []
    controls: list[ThroughputResult] = []
    for _ in range(plan.max_pairs):
        pair = []
        for request, runs in ((target, targets), (control, controls)):
            run = await _flow(request, settings, plan, used, started, sized_bulk)
            if run is None:
                break
            runs.append(run)
            pair.append(run)
            used += run.bytes_received
        if len(pair) < 2 or any(_dead(run) for run in pair):
            break
        early = decide.decide_early(targets, controls, method, expected_bps=expected_bps)
        if early is not None:
            return tuple(targets), tuple(controls), early
    estimate = decide.assess(targets, controls, method, expected_bps=expected_bps)
    return tuple(targets), tuple(controls), estimate


async def sni_swap(
    url: str,
    address: str | None,
    target_sni: str,
    control_sni: str | None,
    settings: Settings,
    budget: Budget | int = Budget(),
    *,
    expected_bps: float | None = None,
) -> tuple[Runs, Runs, ThrottleEstimate]:
    """Target SNI against control SNI, same server (`url`, the helper's /bulk) and address.

    Without a control SNI the URL's own host is the control (the helper's real name).
    `expected_bps` (the control's usual rate, from history) lets a slow run read as degraded."""
    control = control_sni or urlsplit(url).hostname or ""
    return await interleave(
        ThroughputRequest(url, address=address, sni=target_sni),
        ThroughputRequest(url, address=address, sni=control),
        settings,
        budget,
        "sni_swap",
        expected_bps,
        sized_bulk=True,
    )


async def direct(
    target_url: str,
    control_url: str,
    settings: Settings,
    budget: Budget | int = Budget(),
    *,
    target_address: str | None = None,
    control_address: str | None = None,
    expected_bps: float | None = None,
) -> tuple[Runs, Runs, ThrottleEstimate]:
    """A real object of the target against a control object of similar size."""
    return await interleave(
        ThroughputRequest(target_url, address=target_address),
        ThroughputRequest(control_url, address=control_address),
        settings,
        budget,
        "direct",
        expected_bps,
    )
