"""The runner end to end on loopback: real DNS servers (an "ISP" resolver as the system resolver,
a trusted control resolver), a real HTTPS origin and a real helper server.

resolv.conf has no port, so the ISP resolver binds 127.0.83.53:53, which needs root.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
from dnsserver import DnsServer, Rule
from test_server import lab_running

from probe import failures
from probe.measure import dns as dnsmeasure
from probe.model import Settings, Target
from probe.runner import RunPlan, measure_target, run_targets

ISP = "127.0.83.53"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the ISP resolver needs port 53 (root)")


@pytest.fixture
async def lab():
    async with lab_running() as running:
        yield running


@pytest.fixture
async def isp(tmp_path, monkeypatch):
    """The system resolver: a DNS server on ISP:53 named by a resolv.conf of our own."""
    server = DnsServer({})
    try:
        await server.start(host=ISP, udp_port=53)
    except OSError as exc:
        await server.close()
        if exc.errno == errno.EADDRINUSE:
            pytest.skip(f"{ISP}:53 is in use")
        raise
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {ISP}\n")
    monkeypatch.setattr(dnsmeasure, "RESOLV_CONF", str(conf))
    try:
        yield server
    finally:
        await server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan(lab, helper: bool = True, control_resolver: bool = True, throughput: bool = False):
    return RunPlan(
        settings=Settings(timeout=1.5, ca_file=lab.ca_file, dns_linger=0.1),
        control_resolvers=(lab.dns.udp_url,) if control_resolver else (),
        helper_url=lab.helper_url if helper else None,
        throughput=throughput,
        control_sni="control.test",
    )


def target(lab, port: int | None = None) -> Target:
    return Target(domain="example.test", url=lab.target(port=port)["url"], source="test:1")


async def test_clean_target_is_accessible_with_full_evidence(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    m = await measure_target(target(lab), plan(lab))
    assert m.verdict.verdict == "accessible", m.verdict
    assert {d.resolver_kind for d in m.probe.dns} == {"system", "udp"}
    # a working target-SNI handshake needs no control-SNI one; TCP is its connect
    assert [t.sni for t in m.probe.tls] == ["example.test"]
    assert [(t.address, t.failure) for t in m.probe.tcp] == [("127.0.0.1", None)]
    assert m.probe.tcp[0].elapsed == m.probe.tls[0].connect_time
    assert [h.status for h in m.probe.http] == [200]
    assert m.control.http and m.control.http[0].status == 200
    assert m.control_source == "helper" and m.runtime > 0


async def test_nxdomain_from_the_isp_only_is_dns_blocking(lab, isp) -> None:
    isp.zone["example.test"] = Rule("nxdomain")
    m = await measure_target(target(lab), plan(lab))
    assert (m.verdict.verdict, m.verdict.blocking) == ("blocked", "dns"), m.verdict
    assert m.verdict.failure == failures.DNS_NXDOMAIN


async def test_forged_answer_is_dns_blocking(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.2")  # nothing of the origin's there
    m = await measure_target(target(lab), plan(lab))
    assert (m.verdict.verdict, m.verdict.blocking) == ("blocked", "dns"), m.verdict


async def test_injected_duplicate_answers_are_dns_blocking(lab, isp) -> None:
    isp.zone["example.test"] = Rule.inject("127.0.0.2", "127.0.0.1")
    m = await measure_target(target(lab), plan(lab))
    system = next(d for d in m.probe.dns if d.resolver_kind == "system")
    assert len(system.responses) == 2
    assert (m.verdict.verdict, m.verdict.blocking) == ("blocked", "dns"), m.verdict


async def test_down_for_everyone_is_down_not_blocked(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    m = await measure_target(target(lab, port=closed_port()), plan(lab))
    assert m.verdict.verdict == "down", m.verdict


async def test_failure_without_any_control_is_inconclusive(lab, isp) -> None:
    isp.zone["example.test"] = Rule("nxdomain")
    m = await measure_target(target(lab), plan(lab, helper=False, control_resolver=False))
    assert m.verdict.verdict == "inconclusive", m.verdict
    assert m.control_source == "none"


async def test_throughput_ab_against_the_helper_on_a_clean_path(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    isp.zone["localhost"] = Rule.answer("127.0.0.1")
    m = await measure_target(target(lab), plan(lab, throughput=True))
    assert m.verdict.verdict == "accessible", m.verdict
    assert m.verdict.throttling is not None and m.verdict.throttling.state != "throttled"
    snis = {f.sni for f in m.probe.throughput}
    assert snis == {"example.test", "control.test"}
    assert all(f.failure is None and f.bytes_received > 0 for f in m.probe.throughput)


async def test_run_targets_reports_each_target_once_and_collects_the_client_ip(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1")
    seen, ips = [], set()
    targets = [target(lab), target(lab, port=closed_port())]
    results = await run_targets(targets, plan(lab), seen.append, client_ips=ips)
    assert sorted(m.target.url for m in seen) == sorted(t.url for t in targets)
    assert [m.target for m in results] == targets  # in input order
    assert ips == {"127.0.0.1"}
