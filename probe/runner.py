"""Measures targets: the probe's own view beside its controls, then a verdict per target.

For one target, in order: DNS from the system resolver and the control resolver (in parallel);
the helper's control measurement from outside; per address a TCP connect and a TLS handshake
with the target's SNI on it, and, when that handshake fails, one with the control SNI (back to
back, same address, same conditions); an HTTP fetch; and, only when nothing blocks, throughput
(SNI-swap A/B against the helper, and a direct download of a real object of the target).
Targets run concurrently up to a bound, but throughput runs one target at a time so that
targets never compete for the link.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from probe import failures
from probe import verdict as judging
from probe.addresses import is_ip
from probe.helper_api import HelperRequest
from probe.measure import dns, helper, http, http_over, locate, ooni_th, shared, tcp, tls
from probe.measure.classify import cause
from probe.model import (
    DnsQuery,
    DnsResult,
    Endpoint,
    Evidence,
    HttpRequest,
    HttpResult,
    Settings,
    Target,
    TargetMeasurement,
    TcpResult,
    ThrottleEstimate,
    TlsResult,
    Verdict,
)

if TYPE_CHECKING:
    from probe.throttling.plan import RateHistory, ThroughputTests

DEFAULT_CONTROL_SNI = "www.example.com"
INTERNAL_ERROR_RULE = "internal_error"  # the verdict's rule when measuring raised a bug
# Targets in flight per concurrency slot: the others wait for a slot, or have closed their
# connections and wait for their DNS queries' linger, their verdict or the throughput lock.
_IN_FLIGHT_PER_SLOT = 4
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    settings: Settings = field(default_factory=Settings)
    control_resolvers: tuple[str, ...] = ()  # udp://, tls:// or https:// URLs, asked in parallel
    helper_url: str | None = None  # https://helper.example/ (`probe serve`)
    helper_token: str | None = None
    th_urls: tuple[str, ...] = ()  # OONI-protocol test helpers, asked when there is no helper_url
    concurrency: int = 8
    throughput: bool = True
    control_sni: str | None = None  # when the target names no control of its own
    max_addresses: int = 4
    throughput_bytes: int = 48 << 20  # bytes per target for the full throttling A/B
    data_budget: int = 256 << 20  # bytes per run for all throughput tests (screens included)
    history: RateHistory | None = None  # past control rates per domain (from the store)
    locate: bool = False  # locate the censor of blocked/throttled targets (needs raw sockets)


@dataclass
class _RunState:
    """What the targets of one run share: the throughput lock, and the addresses the helper saw
    the probe come from (the volunteer's public IP: the caller scrubs them from results)."""

    throughput_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    client_ips: set[str] = field(default_factory=set)
    throughput: ThroughputTests | None = None
    slots: asyncio.Semaphore | None = None

    def slot(self, plan: RunPlan) -> asyncio.Semaphore:
        """The run's concurrency: held while a target has connections open."""
        if self.slots is None:
            self.slots = asyncio.Semaphore(max(1, plan.concurrency))
        return self.slots

    def throughput_tests(self, plan: RunPlan) -> ThroughputTests:
        """Made on first use: scipy (under probe.throttling) is slow to import."""
        if self.throughput is None:
            from probe.throttling.plan import ThroughputTests

            self.throughput = ThroughputTests(plan.helper_url, plan.throughput_bytes, plan.history,
                                              plan.data_budget)
        return self.throughput


def _host(target: Target) -> str:
    return urlsplit(target.url).hostname or target.domain


def _port(target: Target) -> int:
    parts = urlsplit(target.url)
    return parts.port or (80 if parts.scheme == "http" else 443)


def control_sni(target: Target, plan: RunPlan) -> str:
    return target.control_domain or plan.control_sni or DEFAULT_CONTROL_SNI


def _addresses(answers: Sequence[tuple[str, ...]], limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for addresses in answers:
        for address in addresses:
            seen.setdefault(address, None)
    return tuple(seen)[:limit]


async def _resolve(target: Target, plan: RunPlan, settings: Settings
                   ) -> tuple[tuple[asyncio.Task[DnsResult], ...], tuple[tuple[str, ...], ...],
                              asyncio.Task[DnsResult]]:
    """The A queries (system resolver first, then the controls), returned as soon as each has
    its first answer: the tasks, still listening for injected duplicates (`dns_linger`), and
    the addresses of those first answers (what the results will give). And a task asking the
    system resolver for AAAA meanwhile: recorded for OONI's format, never used to connect or
    judge, and awaited last so that a resolver ignoring AAAA delays nothing else."""
    host = _host(target)
    aaaa = asyncio.create_task(dns.measure(DnsQuery(host, "system", "AAAA"), settings))
    queries = [DnsQuery(host, "system"), *(DnsQuery(host, r) for r in plan.control_resolvers)]
    tasks, firsts = zip(*(dns.start(q, settings) for q in queries), strict=True)
    try:
        answers = await asyncio.gather(*firsts)
    except asyncio.CancelledError:
        for task in (*tasks, aaaa):
            task.cancel()
        raise
    return tasks, tuple(first.addresses if first else () for first in answers), aaaa


async def _per_address(address: str, target: Target, plan: RunPlan, settings: Settings,
                       fetch: HttpRequest | None = None):
    """TCP, then TLS with the target SNI on that connection, to one address; then, only if that
    handshake failed after the connect, TLS with the control SNI (what the verdict compares).
    `fetch`, when given, is sent over the connection once its handshake succeeded (the HTTP
    measurement, as OONI makes it): the third value, None when it was not."""
    port = _port(target)
    if urlsplit(target.url).scheme == "http":
        return await tcp.measure(Endpoint(address, port), settings), (), None
    then = http_over.over(fetch, settings) if fetch is not None else None
    handshake, fetched = await tls.measure_then(Endpoint(address, port, _host(target)), settings,
                                                then)
    handshakes = (handshake,)
    if tls.needs_control_sni(handshake):
        control = Endpoint(address, port, control_sni(target, plan))
        handshakes += (await tls.measure(control, settings),)
    return tcp.from_handshake(handshake), handshakes, fetched


async def _helper(target: Target, plan: RunPlan, settings: Settings, addresses, state):
    if not plan.helper_url and not plan.th_urls:
        return Evidence()
    request = HelperRequest(
        domain=_host(target),
        url=target.url,
        control_domain=control_sni(target, plan),
        addresses=tuple(addresses),
        port=_port(target),
    )
    if not plan.helper_url:  # our own helper wins: it also gives the control SNI's view
        return (await ooni_th.measure(request, settings, plan.th_urls)).evidence
    result = await helper.measure(request, settings, plan.helper_url, plan.helper_token)
    if result.client_ip:
        state.client_ips.add(result.client_ip)
    return result.evidence


async def _dns_step(target: Target, plan: RunPlan, settings: Settings):
    """The queries still listening, the AAAA task (None: no query), the addresses to measure
    and the system resolver's. An address in the URL is used as it is: no query, so no DNS
    evidence (and no DNS verdict)."""
    host = _host(target)
    if is_ip(host):
        return (), None, (host,), (host,)
    queries, firsts, aaaa = await _resolve(target, plan, settings)
    return queries, aaaa, _addresses(firsts, plan.max_addresses), firsts[0]


@dataclass(frozen=True)
class _Active:
    """What a target's connections gave, and its DNS queries, possibly still listening."""

    queries: tuple[asyncio.Task[DnsResult], ...]
    aaaa: asyncio.Task[DnsResult] | None
    per_address: Sequence[tuple[TcpResult, tuple[TlsResult, ...], HttpResult | None]]
    fetch: HttpResult
    control: Evidence


async def _measure_active(target: Target, plan: RunPlan, settings: Settings, state) -> _Active:
    queries, aaaa, addresses, system_addresses = await _dns_step(target, plan, settings)
    helper_task = asyncio.create_task(_helper(target, plan, settings, addresses, state))
    pinned = system_addresses[0] if system_addresses else None
    request = HttpRequest(target.url, address=pinned)
    jobs = [_per_address(a, target, plan, settings, request if a == pinned else None)
            for a in addresses]
    # one address (the usual case) awaited as it is: a task per job costs two turns of a busy
    # event loop (~10 ms each in a 1,000-target run) while the target holds its slot
    per_address = [await jobs[0]] if len(jobs) == 1 else await asyncio.gather(*jobs)
    # on a connection of its own when the measured one could not carry it (failed handshake)
    fetched = next((got for *_, got in per_address if got is not None), None)
    fetch = fetched or await http.measure(request, settings)
    return _Active(queries, aaaa, per_address, fetch, await helper_task)


async def _probe_and_control(target: Target, plan: RunPlan, settings: Settings, state):
    async with state.slot(plan):
        active = await _measure_active(target, plan, settings, state)
    # Queries lingering for injected duplicates are sockets waiting, not work: they hold no
    # slot, so the linger (0.5 s) no longer bounds the run's rate at concurrency / 0.5 s.
    probe = Evidence(
        dns=tuple(await asyncio.gather(*active.queries)),
        dns_aaaa=(await active.aaaa,) if active.aaaa else (),
        tcp=tuple(connect for connect, _, _ in active.per_address),
        tls=tuple(hs for _, handshakes, _ in active.per_address for hs in handshakes),
        http=(active.fetch,),
    )
    return probe, active.control


def _control_source(plan: RunPlan) -> str:
    if plan.helper_url:
        return "helper"
    if plan.th_urls:
        return "ooni-th"
    return "control-resolver" if plan.control_resolvers else "none"


def not_measured(plan: RunPlan) -> ThrottleEstimate:
    """Why a reachable target got no throughput test: the verdict says so instead of staying
    silent (an `accessible` without it would hide that throttling was never looked for)."""
    reason = ("throughput tests were turned off" if not plan.throughput else
              "no helper with a bulk endpoint (--helper) and no throughput_url/"
              "control_throughput_url pair in the list")
    return ThrottleEstimate(state="not_measured", method="none", reason=reason)


async def measure_target(
    target: Target, plan: RunPlan, state: _RunState | None = None
) -> TargetMeasurement:
    """Everything measured for one target, with its verdict."""
    state = state or _RunState()
    settings = replace(plan.settings, origin=time.monotonic())
    started = time.time()
    probe, helper = await _probe_and_control(target, plan, settings, state)
    measurement = TargetMeasurement(
        target=target,
        start_time=started,
        runtime=settings.since_origin(),
        probe=probe,
        control=helper,
        control_source=_control_source(plan),
    )
    seen = judging.facts(measurement)
    first = judging.verdict_of(seen)
    throttle = None
    tests = state.throughput_tests(plan) if plan.throughput else None
    if tests is not None and first.verdict == "accessible" and tests.possible(target):
        async with state.throughput_lock:
            flows, throttle = await tests.measure(target, _host(target), control_sni(target, plan),
                                                  settings)
        measurement = replace(measurement, probe=replace(probe, throughput=flows))
    if throttle is None and first.verdict == "accessible":
        throttle = not_measured(plan)
    final = judging.verdict_of(replace(seen, throttle=throttle)) if throttle else first
    measurement = replace(measurement, verdict=final)
    if plan.locate and locate.wanted(final):  # one scan at a time, apart from throughput tests
        where, injection = await locate.for_target(measurement, control_sni(target, plan),
                                                   settings, state.throughput_lock)
        measurement = replace(measurement, middlebox=where, injection=injection)
    return replace(measurement, runtime=settings.since_origin())


def internal_error(target: Target, plan: RunPlan, exc: Exception, started: float
                   ) -> TargetMeasurement:
    """What is recorded for a target whose measurement raised a programming error: inconclusive,
    `unknown_failure`, the error named in the reason (the traceback goes to the log)."""
    verdict = Verdict(verdict="inconclusive", rule=INTERNAL_ERROR_RULE, failure=failures.UNKNOWN,
                      reason=f"internal error: {cause(exc)}")
    return TargetMeasurement(target=target, start_time=started, runtime=time.time() - started,
                             probe=Evidence(), control=Evidence(),
                             control_source=_control_source(plan), verdict=verdict)


def is_internal_error(m: TargetMeasurement) -> bool:
    return m.verdict is not None and m.verdict.rule == INTERNAL_ERROR_RULE


async def _guarded(target: Target, plan: RunPlan, state: _RunState) -> TargetMeasurement:
    """One target's bug must not lose the run (second line of defence: bad input is refused at
    load time). PROBE_STRICT=1 (the test suite) lets it raise, so a bug still fails loudly."""
    started = time.time()
    try:
        return await measure_target(target, plan, state)
    except Exception as exc:  # noqa: BLE001 - logged with its traceback, recorded, not hidden
        if os.environ.get("PROBE_STRICT") == "1":
            raise
        log.error("internal error measuring %s (recorded as inconclusive)", target.domain,
                  exc_info=True)
        return internal_error(target, plan, exc, started)


async def run_targets(
    targets: Iterable[Target],
    plan: RunPlan,
    on_result: Callable[[TargetMeasurement], None] | None = None,
    client_ips: set[str] | None = None,
    collect: bool = True,
) -> list[TargetMeasurement]:
    """Measures every target, `plan.concurrency` with connections open at a time, pulling them
    from `targets` as they finish (at most `_IN_FLIGHT_PER_SLOT` times that many in flight: a
    list of a million targets is never in memory at once); `on_result` sees each as it
    completes. Returns them in input order when `collect`, else [] (the sink has them).

    `client_ips`, when given, is filled as the run goes with the public addresses the helper
    saw, before `on_result` sees a target measured with them, so the caller can scrub them.
    An exception from `on_result` (e.g. the disk is full) stops the run: it is raised here.
    """
    async with shared.scope():  # the run's control channels (DoH, helper) are kept open
        return await _run_all(targets, plan, on_result, client_ips, collect)


async def _run_all(targets: Iterable[Target], plan: RunPlan,
                   on_result: Callable[[TargetMeasurement], None] | None,
                   client_ips: set[str] | None, collect: bool) -> list[TargetMeasurement]:
    state = _RunState(client_ips=client_ips if client_ips is not None else set())
    pending = iter(enumerate(targets))
    running: dict[asyncio.Task[TargetMeasurement], int] = {}
    done_in_order: dict[int, TargetMeasurement] = {}
    try:
        while True:
            room = _IN_FLIGHT_PER_SLOT * max(1, plan.concurrency) - len(running)
            for index, target in itertools.islice(pending, room):
                running[asyncio.create_task(_guarded(target, plan, state))] = index
            if not running:
                break
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                index, measurement = running.pop(task), task.result()
                if on_result is not None:
                    on_result(measurement)
                if collect:
                    done_in_order[index] = measurement
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [done_in_order[i] for i in sorted(done_in_order)]
