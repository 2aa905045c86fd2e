"""Interleaved A/B throughput tests: target flows against control flows over the same path.

`sni_swap` is the Xue et al. (IMC 2021) method: the same server and the same bytes (the helper's
`/bulk`), once with the target's SNI in the ClientHello and once with a control SNI. Only the SNI
differs, so a rate difference is the SNI's doing. `direct` compares a real object of the target
with a control object of similar size over the same path (weaker: the servers differ too).

Flows alternate A B A B so that a change of the path over time hits both sides alike; each flow
is a new connection (policers keep per-flow state). The pairs grow (bytes x GROWTH, time x 1.5,
like a capacity test) until a target flow outlasts any plausible policer burst
(`decide.outlasted`); from then on the pairs keep that size and are judged, early stopping
after each (`decide.decide_early`). The per-target budget (bytes and seconds) ends it in any
case; if no target flow outlasted a burst by then, the estimate is "bounded" and says which
policer rates were ruled out (`decide.conclude`).
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
JUDGED_MIN_SECONDS = 4.0  # the judged flows' time limit, at least (64 kbit/s: ~22 packets)


@dataclass(frozen=True)
class Budget:
    """Per target. The first pair reads 256 KiB in at most 2 s a flow; each pair that no target
    flow outlasted a burst in is GROWTH times larger (x1.5 in time), but never more than a
    quarter of what is left, so that a pair of the same size can follow it. Once a target flow
    outlasted a burst, the judged pairs keep its size. Defaults: a 10 Mbit/s policer whose
    bucket passes 4 MB (hashlimit in the lab) is outlasted by the fourth pair, inside 48 MiB."""

    total_bytes: int = 48 << 20
    total_seconds: float = 45.0
    first_bytes: int = 256 << 10
    first_seconds: float = 2.0
    max_flow_seconds: float = 5.0
    max_pairs: int = 8
    growth: int = 4

    def flow(self, step: int, left_bytes: int, left_seconds: float) -> tuple[int, float]:
        """(bytes, seconds) of each flow of growing pair `step`."""
        size = min(self.first_bytes * self.growth ** step, left_bytes // 4)
        seconds = min(self.first_seconds * 1.5 ** step, self.max_flow_seconds)
        return size, min(seconds, left_seconds / 2)


def _budget(budget: Budget | int) -> Budget:
    return budget if isinstance(budget, Budget) else Budget(total_bytes=int(budget))


def _dead(run: ThroughputResult) -> bool:
    """A flow that got nothing (blocked, refused, helper down): more flows will not help."""
    return run.failure is not None and run.bytes_received == 0


def sized(url: str, size: int) -> str:
    """The bulk URL asking for exactly `size` bytes: the server sends what the flow reads, so
    no flow ends in a reset and no byte is sent that the budget does not count."""
    return str(URL(url).update_query(bytes=size))


async def flow(request: ThroughputRequest, settings: Settings, size: int, seconds: float,
               sized_bulk: bool) -> ThroughputResult:
    """One flow of `size` bytes and `seconds` at most."""
    limited = ThroughputRequest(
        url=sized(request.url, size) if sized_bulk else request.url,
        address=request.address,
        sni=request.sni,
        max_bytes=size,
        max_seconds=seconds,
    )
    return await throughput.measure(limited, settings)


@dataclass
class _Pairs:
    """The flows so far and how many of the last pairs outlasted a burst (judged)."""

    targets: list[ThroughputResult]
    controls: list[ThroughputResult]
    judged: int = 0
    step: int = 0
    used: int = 0
    ended: str = "the data budget ended"
    kept: tuple[int, float] | None = None  # the (bytes, seconds) of the judged pairs

    def next(self, plan: Budget, started: float) -> tuple[int, float] | None:
        """The next pair's flow size and time, None when the budget cannot pay for it."""
        left_bytes = plan.total_bytes - self.used
        left_time = plan.total_seconds - (time.monotonic() - started)
        size, seconds = self.kept or plan.flow(self.step, left_bytes, left_time)
        smaller = not self.kept and self.targets and size < self.targets[-1].bytes_received
        if size < 16 << 10 or 2 * size > left_bytes or smaller:  # a smaller pair adds no reach
            self.ended = "the data budget ended"
        elif seconds < 0.2 or 2 * seconds > left_time + 1e-9:
            self.ended = "the time budget ended"
        else:
            return size, seconds
        return None

    def add(self, target: ThroughputResult, control: ThroughputResult,
            size: int, seconds: float) -> None:
        self.targets.append(target)
        self.controls.append(control)
        self.used += target.bytes_received + control.bytes_received
        if self.judged or decide.outlasted(target, size):
            self.judged += 1  # this size stays: the pairs from here on are judged
            # ... and runs long enough that a slow rate is many packets, not a few lumps
            self.kept = self.kept or (size, max(seconds, JUDGED_MIN_SECONDS))
        else:
            self.step += 1


async def interleave(
    target: ThroughputRequest,
    control: ThroughputRequest,
    settings: Settings,
    budget: Budget | int,
    method: str,
    expected_bps: float | None = None,
    sized_bulk: bool = False,
) -> tuple[Runs, Runs, ThrottleEstimate]:
    """A B A B ... growing until a target flow outlasts a burst, then until decided, out of
    budget, or a side gets nothing at all. `sized_bulk`: the URLs are a bulk endpoint that takes
    the size of each flow (`?bytes=`)."""
    plan = _budget(budget)
    started = time.monotonic()
    pairs = _Pairs([], [])
    for _ in range(plan.max_pairs):
        sizing = pairs.next(plan, started)
        if sizing is None:
            break
        a = await flow(target, settings, *sizing, sized_bulk)
        b = await flow(control, settings, *sizing, sized_bulk)
        pairs.add(a, b, *sizing)
        if _dead(a) or _dead(b):  # nothing to compare: the old verdict, inconclusive
            return (tuple(pairs.targets), tuple(pairs.controls),
                    decide.assess(pairs.targets, pairs.controls, method))
        if pairs.judged:
            early = decide.decide_early(pairs.targets[-pairs.judged:],
                                        pairs.controls[-pairs.judged:], method,
                                        expected_bps=expected_bps)
            if early is not None and (early.state != "throttled"
                                      or pairs.judged >= decide.MIN_PAIRS_THROTTLED):
                break
    else:
        pairs.ended = "the pairs ran out"
    estimate = decide.conclude(pairs.targets, pairs.controls, pairs.judged, method,
                               pairs.ended, expected_bps=expected_bps)
    return tuple(pairs.targets), tuple(pairs.controls), estimate


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
