"""probe.throttling.plan: which tests a target gets, the shared budget, the estimate its verdict uses.

Against the in-process HTTPS server of test_abtest (it polices flows whose SNI is POLICED and a
slow "/object" to 140 kbit/s; everything else at full speed), named "localhost" here so that the
direct test can resolve it.
"""

from __future__ import annotations

import pytest
from test_throttling_abtest import POLICED, policing_server

from probe.model import Target, ThrottleEstimate
from probe.throttling import plan

BUDGET = 1 << 20


@pytest.fixture
async def server(tmp_path):
    async with policing_server(tmp_path, "localhost") as running:
        yield running


def estimate(state: str, confidence: float | None = 0.5) -> ThrottleEstimate:
    return ThrottleEstimate(state=state, method="sni_swap", rate_bps=1.0, control_rate_bps=1.0,
                            ratio=1.0, p_value=0.5, confidence=confidence)


def test_strongest_prefers_the_most_severe_state_then_confidence() -> None:
    ranked = [estimate("clean", 0.9), estimate("throttled", 0.6), estimate("inconclusive"),
              estimate("throttled", 0.7), estimate("degraded")]
    best = plan.strongest(ranked)
    assert (best.state, best.confidence) == ("throttled", 0.7)
    assert plan.strongest([]) is None
    assert plan.strongest([estimate("clean", None)]).state == "clean"


def test_expected_rate_needs_a_warm_history() -> None:
    target = Target(domain="x.test")
    assert plan.expected_rate(target, None) is None
    points = [(float(t), 8e6) for t in range(5)]
    assert plan.expected_rate(target, lambda _domain: points) is None  # warm-up
    points += [(5.0, 9e6), (6.0, 1e3)]  # one outlier does not move it
    assert plan.expected_rate(target, lambda _domain: points) == pytest.approx(8e6)


async def test_a_decisive_sni_swap_spares_the_direct_test(server) -> None:
    base, settings = server
    target = Target(domain=POLICED, throughput_url=f"{base}/object",
                    control_throughput_url=f"{base}/bulk?bytes={BUDGET}")
    paths = plan.Paths(f"{base}/bulk?bytes={BUDGET}", "127.0.0.1", "www.example.org")
    flows, result = await plan.measure(target, POLICED, paths, settings, BUDGET)
    assert result is not None and (result.state, result.method) == ("throttled", "sni_swap")
    assert {f.sni for f in flows} == {POLICED, "www.example.org"}
    assert sum(f.bytes_received for f in flows) <= BUDGET


async def test_without_a_helper_the_direct_test_compares_real_objects(server) -> None:
    base, settings = server
    target = Target(domain="media.test", throughput_url=f"{base}/object",
                    control_throughput_url=f"{base}/bulk?bytes={BUDGET}")
    flows, result = await plan.measure(target, "media.test", plan.Paths(), settings,
                                             BUDGET)
    assert result is not None and (result.state, result.method) == ("throttled", "direct")
    assert {f.url.rsplit("/", 1)[-1].split("?")[0] for f in flows} == {"object", "bulk"}
    assert sum(f.bytes_received for f in flows) <= BUDGET


async def test_no_helper_and_no_objects_measures_nothing(server) -> None:
    _, settings = server
    flows, result = await plan.measure(Target(domain="a.test"), "a.test",
                                             plan.Paths(), settings, BUDGET)
    assert (flows, result) == ((), None)
