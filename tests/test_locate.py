"""probe.measure.locate and probe.verdict.forensics: the pure judgements row by row, then the real
TTL-limited attempts against loopback servers (raw sockets: root or CAP_NET_RAW, else skipped).
The lab tests (tests/lab/test_locate_lab.py) put a censor at hop 2 or 3; here the server itself
is the only actor, so whatever it does must never be called injected."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import factories
import pytest
import tlsservers as ts
from prometheus_client import CollectorRegistry, generate_latest

from probe import failures
from probe.cli.locate import describe
from probe.lab import scenarios, topology
from probe.measure import locate, ttlprobe
from probe.model import (
    DnsAnswer,
    DnsResponse,
    DnsResult,
    Evidence,
    HopProbe,
    Middlebox,
    PacketFacts,
    Settings,
    Target,
    TargetMeasurement,
    Vantage,
    Verdict,
    from_dict,
    to_dict,
)
from probe.monitoring.metrics import ResultsCollector, Snapshot
from probe.results.ooni import from_ooni, to_ooni
from probe.results.tables import json_line, where
from probe.verdict import forensics, judge

TARGET, CONTROL = "blocked.example", "www.example.com"


def hop(ttl: int, reaction: str = "none", control: bool = False, router: str | None = None,
        rate: float | None = None) -> HopProbe:
    return HopProbe(ttl=ttl, name=CONTROL if control else TARGET, control=control,
                    reaction=reaction, router=router, rate_bps=rate)


def facts(kind: str, ttl: int, window: int = 0) -> PacketFacts:
    return PacketFacts(kind=kind, ttl=ttl, ip_id=0, window=window, t=0.001)


# --- the hop: first TTL where the target draws what the control does not -----------------------

@pytest.mark.parametrize(("target", "control", "reaction"), [
    (hop(3, "reset"), hop(3, "none", True), "reset"),
    (hop(3, "reset"), hop(3, "reset", True), None),  # both reset: nothing keyed on the name
    (hop(3, "blockpage"), hop(3, "server", True), "blockpage"),
    (hop(3, "silence"), hop(3, "none", True), "silence"),
    (hop(3, "silence"), hop(3, "silence", True), None),  # the path itself is down
    (hop(3, "silence"), None, None),  # silence means nothing without a control beside it
    (hop(3, rate=200e3), hop(3, control=True, rate=100e6), "slow"),
    (hop(3, rate=60e6), hop(3, control=True, rate=100e6), None),  # within half: not policed
    (hop(3, rate=128e6), hop(3, control=True, rate=780e6), None),  # too fast to be policed
    (hop(3, rate=20e6), hop(3, control=True, rate=780e6), "slow"),
    (hop(3, "server"), hop(3, "server", True), None),
])
def test_reaction_against_the_control(target, control, reaction) -> None:
    assert forensics.reaction_against(target, control) == reaction


def test_the_first_reacting_ttl_is_the_hop_and_its_router_is_reported() -> None:
    pairs = [(hop(1, router="10.0.0.1"), hop(1, control=True, router="10.0.0.1")),
             (hop(2, router="10.0.1.1"), hop(2, control=True, router="10.0.1.1")),
             (hop(3, "reset", router="10.0.2.1"), hop(3, control=True, router="10.0.2.1"))]
    found = forensics.locate(pairs)
    assert (found.hop, found.method, found.router) == (3, "ttl_reset", "10.0.2.1")
    assert found.control_clean is True and found.server_hop is None
    assert "1:10.0.0.1, 2:10.0.1.1, 3:10.0.2.1" in found.evidence[1]


def test_reaching_the_server_first_means_no_hop() -> None:
    pairs = [(hop(1), hop(1, control=True)), (hop(2, "server"), hop(2, "server", True))]
    found = forensics.locate(pairs)
    assert (found.hop, found.method, found.server_hop) == (None, "none", 2)
    assert "the server answered from TTL 2" in found.evidence[0]


def test_a_control_that_meets_a_reset_is_not_clean() -> None:
    found = forensics.locate([(hop(1, "reset"), hop(1, "reset", True))])
    assert found.hop is None and found.control_clean is False


def test_a_policer_is_named_ttl_rate() -> None:
    found = forensics.locate([(hop(1, rate=90e6), hop(1, control=True, rate=95e6)),
                              (hop(2, rate=150e3), hop(2, control=True, rate=95e6))])
    assert (found.hop, found.method) == (2, "ttl_rate")
    assert "150 kbit/s" in found.evidence[0]


# --- who sent the packet -----------------------------------------------------------------------

def test_a_reset_from_nearer_than_the_server_is_injected() -> None:
    finding = forensics.packet_injection(facts("rst", 62), facts("syn_ack", 61, 65160))
    assert finding.injected is True
    assert "1 hop(s) nearer than the server" in finding.evidence[-1]


def test_the_servers_own_reset_is_not_injected() -> None:
    finding = forensics.packet_injection(facts("rst", 61, 502), facts("syn_ack", 61, 65160))
    assert finding.injected is False


def test_a_proxy_that_answered_the_handshake_is_told_by_port_443() -> None:
    page, handshake, real = facts("data", 62), facts("syn_ack", 62), facts("syn_ack", 61)
    assert forensics.packet_injection(page, handshake, None, "blockpage").injected is False
    finding = forensics.packet_injection(page, handshake, real, "blockpage")
    assert finding.injected is True and "transparent proxy" in finding.evidence[-1]


def test_without_both_packets_the_finding_is_unknown() -> None:
    assert forensics.packet_injection(facts("rst", 64), None).injected is None
    assert forensics.packet_injection(None, facts("syn_ack", 64)).injected is None


@pytest.mark.parametrize(("ttl", "start"), [(1, 64), (64, 64), (65, 128), (128, 128), (200, 255)])
def test_initial_ttl(ttl: int, start: int) -> None:
    assert forensics.initial_ttl(ttl) == start


def _dns(*responses: DnsResponse, kind: str = "system") -> DnsResult:
    return DnsResult(domain="twitter.com", resolver="udp://10.0.0.8:53", resolver_kind=kind,
                     responses=responses, addresses=responses[0].addresses if responses else ())


def test_two_answers_to_one_query_are_an_injection() -> None:
    forged = DnsResponse(t=0.002, rcode="NOERROR", addresses=("10.77.3.1",),
                         answers=(DnsAnswer(answer_type="A", value="10.77.3.1", ttl=300),))
    real = DnsResponse(t=0.2, rcode="NOERROR", addresses=("10.77.10.2",),
                       answers=(DnsAnswer(answer_type="A", value="10.77.10.2", ttl=3600),))
    finding = forensics.dns_injection(_dns(forged, real), _dns(real, kind="tls"))
    assert finding.injected is True and finding.packet == "dns_answer"
    assert "answer 1 after 2.0 ms: NOERROR 10.77.3.1, TTL 300" in finding.evidence
    assert "control answer after 200.0 ms: 10.77.10.2, TTL 3600" in finding.evidence


def test_one_lying_answer_cannot_tell() -> None:
    lie = DnsResponse(t=0.01, rcode="NXDOMAIN")
    assert forensics.dns_injection(_dns(lie), None).injected is None


# --- records: new optional fields, older records still load ------------------------------------

def test_a_record_without_the_new_fields_still_loads() -> None:
    data = to_dict(TargetMeasurement(target=Target(domain="x.org"), start_time=0.0, runtime=0.0,
                                     probe=Evidence(), control=Evidence()))
    del data["middlebox"], data["injection"]
    m = from_dict(data, TargetMeasurement)
    assert m.middlebox is None and m.injection is None


def test_a_middlebox_survives_a_round_trip() -> None:
    box = Middlebox(address="10.0.0.1", port=443, name=TARGET, control_name=CONTROL,
                    method="ttl_reset", hop=3, probes=(hop(3, "reset"),),
                    injected=forensics.packet_injection(facts("rst", 62), facts("syn_ack", 61)))
    assert from_dict(to_dict(box), Middlebox) == box


# --- real attempts on loopback (the server is at TTL 1: nothing lies in between) ---------------

raw = pytest.mark.skipif(not ttlprobe.raw_allowed(), reason="needs raw sockets (root or "
                         "CAP_NET_RAW)")


async def _resets_the_blocked_name(reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
    """A server that itself refuses one SNI with a reset, and answers any other (an alert)."""
    hello = await reader.read(4096)
    if TARGET.encode() in hello:
        ts.abort_with_rst(writer.transport)
        return
    writer.write(ts.TLS_ALERT)
    await writer.drain()
    writer.close()


def _request(port: int, **kw) -> locate.LocateRequest:
    return locate.LocateRequest(address="127.0.0.1", name=TARGET, control_name=CONTROL,
                                port=port, max_ttl=4, max_seconds=20, **kw)


@raw
async def test_on_loopback_the_server_answers_at_ttl_1_and_nothing_is_located() -> None:
    async with ts.raw_server(ts.tls_alert) as server:
        found = await locate.measure(_request(server.port), Settings())
    assert found.failure is None and found.hop is None and found.method == "none"
    assert found.server_hop == 1 and found.control_clean is True
    assert [(p.ttl, p.control, p.reaction) for p in found.probes] == [
        (1, False, "server"), (1, True, "server")]
    syn_ack = found.probes[0].packets[0]
    assert syn_ack.kind == "syn_ack" and syn_ack.ttl == 64 and syn_ack.window


@raw
async def test_a_servers_own_reset_keyed_on_the_name_is_not_injected() -> None:
    async with ts.raw_server(_resets_the_blocked_name) as server:
        found = await locate.measure(_request(server.port), Settings())
    assert (found.hop, found.method) == (1, "ttl_reset"), found.evidence
    assert found.injected is not None and found.injected.injected is False, found.injected
    assert "same TTL as the SYN-ACK (64)" in found.injected.evidence[-1]


@raw
async def test_a_closed_port_is_a_connect_failure_and_not_injected() -> None:
    with ts.refused_port() as port:
        found = await locate.measure(_request(port), Settings())
    assert found.failure == failures.CONNECTION_REFUSED and found.operation == failures.CONNECT
    assert found.hop is None and found.injected is not None
    assert found.injected.injected is None  # no SYN-ACK: the reset is not called injected
    assert found.probes[0].packets[0].kind == "rst"


async def test_without_raw_sockets_the_result_says_so(monkeypatch) -> None:
    """The one mock here: a process without CAP_NET_RAW cannot be made from inside the test
    process (the lab test runs the real command with the capability dropped)."""
    monkeypatch.setattr(ttlprobe, "raw_allowed", lambda: False)
    found = await locate.measure(_request(9), Settings())
    assert found.failure == failures.RAW_SOCKET_DENIED and found.probes == ()


async def test_an_ipv6_address_is_not_located_yet() -> None:
    found = await locate.measure(locate.LocateRequest(address="::1", name=TARGET,
                                                      control_name=CONTROL), Settings())
    assert found.failure == failures.UNKNOWN and found.cause == "IPv6 is not located yet"
    assert found.probes == ()


def test_the_trigger_is_a_real_client_hello_naming_the_target() -> None:
    hello = ttlprobe.client_hello(TARGET)
    assert hello[0] == 0x16 and hello[5] == 0x01  # a handshake record holding a ClientHello
    assert b"\x00" + len(TARGET).to_bytes(2, "big") + TARGET.encode() in hello


# --- where it shows: the record, the --json line, the table, the metrics ------------------------

def _located(hop_: int | None = 3, injected: bool | None = True) -> TargetMeasurement:
    m = factories.measurement(factories.tls_broken(failures.CONNECTION_RESET))
    finding = forensics.packet_injection(facts("rst", 62 if injected else 61), facts("syn_ack", 61))
    box = Middlebox(address=factories.REAL, port=443, name=factories.DOMAIN, control_name=CONTROL,
                    method="ttl_reset" if hop_ else "none", hop=hop_, router="10.9.9.9",
                    probes=(hop(3, "reset"),), injected=finding)
    return replace(m, verdict=judge(m), middlebox=box, injection=finding)


def test_the_ooni_record_and_the_json_line_carry_middlebox_and_injected() -> None:
    m = _located()
    record = to_ooni(m, "20210314T000000Z_probe_web_RU_8359_n1_0123456789abcdef",
                     Vantage(name="v"))
    keys = record["test_keys"]
    assert keys["middlebox"]["hop"] == 3 and keys["middlebox"]["router"] == "10.9.9.9"
    assert "probes" not in keys["middlebox"] and keys["injected"] is True
    assert keys["injection"]["packet"] == "rst"
    line = json.loads(json_line(record))
    assert line["middlebox"]["hop"] == 3 and line["injected"] is True
    assert from_ooni(record).middlebox == m.middlebox  # the attempts come back from evidence


def test_a_record_without_a_middlebox_says_null() -> None:
    keys = to_ooni(replace(_located(), middlebox=None, injection=None), "r",
                   Vantage())["test_keys"]
    assert keys["middlebox"] is None and keys["injected"] is None


@pytest.mark.parametrize(("hop_", "injected", "note"), [
    (3, True, "at hop 3 (injected): "), (2, False, "at hop 2 (not injected): "),
    (None, None, ""),
])
def test_the_tables_note(hop_, injected, note) -> None:
    assert where(_located(hop_, injected)) == note


def test_the_hop_gauge_has_no_router_label() -> None:
    registry = CollectorRegistry()
    snap = Snapshot(Vantage(name="v"), (_located(),))
    registry.register(ResultsCollector(lambda: snap))
    lines = [line for line in generate_latest(registry).decode().splitlines()
             if line.startswith("censorprobe_target_censor_hop{")]
    assert len(lines) == 1 and lines[0].endswith(" 3.0"), lines
    assert "10.9.9.9" not in lines[0] and "router" not in lines[0]
    unlocated = Snapshot(Vantage(name="v"), (_located(None),))
    registry = CollectorRegistry()
    registry.register(ResultsCollector(lambda: unlocated))
    assert "censorprobe_target_censor_hop{" not in generate_latest(registry).decode()


@pytest.mark.parametrize(("verdict", "blocking", "wanted"), [
    ("blocked", "tls", True), ("blocked", "tcp", True), ("blocked", "http", True),
    ("blocked", "dns", True), ("throttled", None, True), ("accessible", None, False),
    ("down", None, False), ("degraded", None, False),
])
def test_which_verdicts_are_located(verdict, blocking, wanted) -> None:
    assert locate.wanted(Verdict(verdict=verdict, blocking=blocking)) is wanted
    assert locate.wanted(None) is False


@pytest.mark.parametrize(("value", "ok"), [(2, True), (3, True), (None, True), (0, False),
                                           (9, False), ("2", False), (True, False)])
def test_censor_hop_in_scenario_data(value, ok) -> None:
    data = {"name": "x", "description": "d", "censor_hop": value,
            "targets": [{"domain": "a.org", "expect": "accessible"}]}
    if ok:
        assert scenarios.parse(data).censor_hop == value
    else:
        with pytest.raises(ValueError, match="censor_hop"):
            scenarios.parse(data)


def test_the_default_lab_is_unchanged_and_the_longer_path_names_its_routers() -> None:
    assert topology.Names("p").all == ("p-client", "p-censor", "p-net")
    assert topology.Names("p", 3).all == ("p-client", "p-r1", "p-r2", "p-censor", "p-a1",
                                           "p-net")
    assert {s.censor_hop for s in scenarios.all_scenarios()
            if not s.name.startswith("locate_")} == {None}


def test_the_commands_text_names_the_hop_router_and_finding() -> None:
    box = _located().middlebox
    assert box is not None
    text = describe(replace(box, control_clean=True))
    assert text.startswith(f"{box.name} at {box.address}:443: censor at hop 3, router 10.9.9.9")
    assert "control www.example.com: clean" in text and "rst: injected" in text
    refused = replace(box, hop=None, failure=failures.CONNECTION_REFUSED, operation="connect",
                      injected=None)
    assert describe(refused).startswith(f"{box.name} at {box.address}:443: connection_refused")
