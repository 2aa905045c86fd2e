"""probe.throttling.screen and plan.ThroughputTests: the cheap screen, who gets the full A/B,
and the run's data budget, against the in-process policing server of test_throttling_abtest
(POLICED is policed at 140 kbit/s after a 30 kB burst; other names run at full speed)."""

from __future__ import annotations

import pytest
from test_throttling_abtest import POLICED, policing_server

from probe.model import Target, ThroughputResult
from probe.throttling import plan, screen


@pytest.fixture
async def server(tmp_path):
    async with policing_server(tmp_path, "localhost") as running:
        yield running


async def test_a_fast_target_is_screened_with_one_flow_and_a_shared_control(server) -> None:
    base, settings = server
    tests = plan.ThroughputTests(f"{base}/", 8 << 20, None, data_budget=64 << 20)
    first, estimate = await tests.measure(Target(domain="a.test"), "a.test", "ctl.test", settings)
    second, _ = await tests.measure(Target(domain="b.test"), "b.test", "ctl.test", settings)
    assert [f.sni for f in first] == ["a.test", "ctl.test"] and [f.sni for f in second] == ["b.test"]
    assert all(f.bytes_received == screen.SCREEN_BYTES for f in (*first, *second))
    assert estimate is not None and (estimate.state, estimate.method) == ("bounded", "screen")
    assert estimate.outlasted_burst is False and "no policing below" in (estimate.reason or "")
    # 64 KiB with bursts up to 2 s: only policers below ~0.26 Mbit/s are ruled out
    assert 0.2e6 < (estimate.excluded_below_bps or 0) < 0.27e6
    account = tests.run_budget
    assert (account.screened, account.full, account.used) == (2, 0, 3 * screen.SCREEN_BYTES)


async def test_a_suspect_gets_the_full_ab_and_is_found(server) -> None:
    base, settings = server
    tests = plan.ThroughputTests(f"{base}/", 8 << 20, None, data_budget=64 << 20)
    flows, estimate = await tests.measure(Target(domain=POLICED), POLICED, "ctl.test", settings)
    assert estimate is not None and (estimate.state, estimate.method) == ("throttled", "sni_swap")
    assert estimate.rate_bps == pytest.approx(140e3, rel=0.25)
    assert flows[0].bytes_received == screen.SCREEN_BYTES and flows[0].goodput_bps < 1e6
    assert estimate.bytes_used == sum(f.bytes_received for f in flows)
    assert (tests.run_budget.screened, tests.run_budget.full) == (1, 1)


async def test_a_media_host_skips_the_screen(server) -> None:
    base, settings = server
    tests = plan.ThroughputTests(f"{base}/", 4 << 20, None, data_budget=64 << 20)
    target = Target(domain="video.test", media=True)
    flows, estimate = await tests.measure(target, "video.test", "ctl.test", settings)
    assert estimate is not None and estimate.method == "sni_swap"
    assert estimate.state == "bounded"  # loopback: no flow outlasts a burst in 4 MiB
    assert flows[0].bytes_received == 256 << 10  # the A/B's first flow, not a screen
    assert (tests.run_budget.screened, tests.run_budget.full) == (0, 1)


async def test_the_run_budget_ends_testing_and_says_so(server) -> None:
    base, settings = server
    tests = plan.ThroughputTests(f"{base}/", 4 << 20, None, data_budget=200_000)
    states = []
    for name in ("a.test", "b.test", "c.test", "d.test"):
        _, estimate = await tests.measure(Target(domain=name), name, "ctl.test", settings)
        states.append(estimate.state if estimate else None)
    assert states == ["bounded", "not_measured", "not_measured", "not_measured"]
    _, last = await tests.measure(Target(domain="e.test"), "e.test", "ctl.test", settings)
    assert last is not None and "--data-budget" in (last.reason or "")
    assert tests.run_budget.used <= 200_000 and tests.run_budget.skipped == 4
    assert "1 targets screened" in tests.run_budget.summary()


def flow(goodput: float | None, samples=((0.0, 0), (0.01, 65536))) -> ThroughputResult:
    return ThroughputResult(t0=0.0, elapsed=0.1, url="https://x/", goodput_bps=goodput,
                            samples=samples, bytes_received=65536)


def test_suspect_needs_a_slow_flow_or_a_knee() -> None:
    control = flow(400e6)
    assert not screen.suspect(flow(300e6), control)
    assert not screen.suspect(flow(100e6), control)  # slower, but far too fast to be policed
    assert screen.suspect(flow(1e6), control)
    assert not screen.suspect(flow(1e6), flow(1.5e6))  # a slow path for everyone
    bent = ((0.0, 0), (0.05, 30_000), (0.5, 38_000), (1.0, 47_000), (1.5, 56_000))
    assert screen.suspect(flow(None, bent), None)
