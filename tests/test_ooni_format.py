"""Our stored lines as OONI's own tools read them (PyPI oonidata 0.3.0), and the Web
Connectivity keys they carry beside ours.

oonidata's `load_measurement` picks its model by `test_name` only: our honest name
("probe_web") loads as a base measurement without test keys. So each record is loaded twice:
as it is (the base fields), and with test_name "web_connectivity" (its Web Connectivity model
then parses our test keys). Whatever we wrote in Web Connectivity's shape must come back from
the model unchanged (value and type); the keys the model has no field for are listed below.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import ssl
from typing import Any

import dns.message
import dns.rdatatype
import dns.rrset
import factories as F
import pytest
import tlsservers as ts
import trustme
from cryptography import x509

try:
    from oonidata.dataclient import load_measurement
    from oonidata.models.nettests.base_measurement import BaseMeasurement
    from oonidata.models.nettests.web_connectivity import WebConnectivity
except ImportError as exc:  # oonidata 0.3.0 pins click 8.0 and cryptography 38: see pyproject
    raise ImportError("oonidata is installed apart: pip install --no-deps oonidata==0.3.0 "
                      "(its run-time needs are in the test extras)") from exc

import test_runner
from dnsserver import Rule
from test_store import all_cases, validate

from probe.measure import dns as dns_measure
from probe.measure import tls
from probe.model import DnsAnswer, DnsQuery, Endpoint, Settings, Vantage
from probe.results.ooni import from_ooni, to_ooni
from probe.results.web_connectivity import http_matches
from probe.runner import measure_target
from probe.verdict import judge

lab, isp = test_runner.lab, test_runner.isp  # the runner's loopback fixtures, shared
VANTAGE = Vantage(name="moscow-mts", asn="AS8359", cc="RU", network_name="MTS PJSC")
REPORT = "20210314T000000Z_probe_web_RU_8359_n1_0123456789abcdef"

# Keys we write that oonidata 0.3.0's models have no field for (so they do not survive a load):
# ours, and a few of the spec's that its models leave out. Anything else lost is a failure.
OURS = {"verdict", "probe_blocking", "failure", "rule", "rules_version", "reason", "decided_by",
        "notes", "throttling", "control_source", "throughput", "evidence",
        "middlebox", "injected", "injection"}  # the last three: probe locate (issue 14)
MODEL_LACKS = {
    "extensions",  # df-000 (the base model has no field)
    "test_keys.agent",  # df-001
    "test_keys.control.ip_info",  # ts-017's helper answer
    "test_keys.queries[].tags", "test_keys.queries[].responses",
    "test_keys.tls_handshakes[].cert_valid_for_name",
    "test_keys.requests[].response.body_length", "test_keys.requests[].response.title",
    "test_keys.requests[].response.blockpage",
    "test_keys.network_events[].t0",  # df-008 has t0, the model only t
}
ALLOWED = {f"test_keys.{k}" for k in OURS} | MODEL_LACKS


def dropped(ours: Any, theirs: Any, path: str = "") -> set[str]:
    """Paths of keys in `ours` the model did not keep; values it kept must be equal in value
    and type (a text rcode turned into an integer, or the reverse, fails here)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), path
        lost = set()
        for key, value in ours.items():
            where = f"{path}.{key}" if path else key
            if key not in theirs:
                lost.add(where)
            else:
                lost |= dropped(value, theirs[key], where)
        return lost
    if isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), path
        return set().union(*(dropped(a, b, f"{path}[]") for a, b in zip(ours, theirs,
                                                                             strict=True)))
    assert ours == theirs and type(ours) is type(theirs), (path, ours, theirs)
    return set()


def loads_as_web_connectivity(record: dict[str, Any]) -> set[str]:
    """Loads a record, as stored (JSON), with oonidata both ways; returns what its models
    dropped."""
    record = json.loads(json.dumps(record))
    base = load_measurement(msmt=record)
    assert type(base) is BaseMeasurement and base.report_id == record["report_id"]
    wc = load_measurement(msmt={**record, "test_name": "web_connectivity"})
    assert isinstance(wc, WebConnectivity)
    theirs = wc.to_dict()
    theirs["test_name"] = record["test_name"]
    return dropped(record, theirs)


def enriched():
    """A measurement with everything the format can carry: AAAA and CNAME answers with TTLs,
    a DER chain, repeated response headers and throughput samples."""
    m = all_cases()["throttled"]
    answers = (DnsAnswer(answer_type="CNAME", value="edge.twitter.com", ttl=300),
               DnsAnswer(answer_type="A", value=F.REAL, ttl=60))
    a = dataclasses.replace(m.probe.dns[0], answers=answers)
    aaaa = dataclasses.replace(F.dns(("2001:db8::1",)), qtype="AAAA", answers=(
        DnsAnswer(answer_type="AAAA", value="2001:db8::1", ttl=None),))
    leaf = trustme.CA().create_child_ca().issue_cert("twitter.com")
    chain = tuple(base64.b64encode(ssl.PEM_cert_to_DER_cert(pem.bytes().decode())).decode()
                  for pem in leaf.cert_chain_pems)
    handshake = dataclasses.replace(m.probe.tls[0], chain_der=chain)
    fetch = dataclasses.replace(m.probe.http[0], headers=(
        ("Set-Cookie", "a=1"), ("X-Served-By", "edge"), ("Set-Cookie", "b=2")))
    probe = dataclasses.replace(m.probe, dns=(a, aaaa), tls=(handshake, *m.probe.tls[1:]),
                                http=(fetch,))
    return dataclasses.replace(m, probe=probe)


CASES = {**all_cases(), "enriched": enriched()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_record_loads_in_oonidata_with_nothing_dropped(name):
    record = to_ooni(CASES[name], REPORT, VANTAGE)
    validate(record)
    lost = loads_as_web_connectivity(record)
    assert lost <= ALLOWED, sorted(lost - ALLOWED)
    assert "test_keys.verdict" in lost  # the check sees our own keys go, so it works


def test_what_oonidata_drops_is_exactly_the_listed_keys():
    """Every listed key is really written and really dropped (the list cannot go stale)."""
    lost = set().union(*(loads_as_web_connectivity(to_ooni(m, REPORT, VANTAGE))
                         for m in CASES.values()))
    assert lost == ALLOWED


def test_the_check_catches_a_dropped_or_retyped_key():
    record = to_ooni(CASES["enriched"], REPORT, VANTAGE)
    record["test_keys"]["queries"][0]["rcode"] = "0"  # text: the model makes it an integer
    with pytest.raises(AssertionError):
        loads_as_web_connectivity(record)
    record = to_ooni(CASES["enriched"], REPORT, VANTAGE)
    record["test_keys"]["tcp_connect"][0]["status"]["x_new"] = 1
    assert "test_keys.tcp_connect[].status.x_new" in loads_as_web_connectivity(record)


def test_enriched_record_in_the_spec_shapes():
    m = CASES["enriched"]
    record = to_ooni(m, REPORT, VANTAGE)
    keys = record["test_keys"]
    a, aaaa = keys["queries"]
    assert a["answers"] == [{"answer_type": "CNAME", "hostname": "edge.twitter.com", "ttl": 300},
                            {"answer_type": "A", "ipv4": F.REAL, "ttl": 60}]
    assert aaaa["query_type"] == "AAAA" and aaaa["answers"][0]["ipv6"] == "2001:db8::1"
    response = keys["requests"][0]["response"]
    assert response["headers"] == {"Set-Cookie": "a=1", "X-Served-By": "edge"}  # first wins
    assert response["headers_list"] == [["Set-Cookie", "a=1"], ["X-Served-By", "edge"],
                                        ["Set-Cookie", "b=2"]]
    certs = keys["tls_handshakes"][0]["peer_certificates"]
    assert len(certs) == 2 and all(c["format"] == "base64" for c in certs)
    leaf = x509.load_der_x509_certificate(base64.b64decode(certs[0]["data"]))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["twitter.com"]
    assert "chain_der" not in keys["evidence"]["probe"]["tls"][0]  # stored once
    assert from_ooni(record) == m
    events = keys["network_events"]
    assert {e["operation"] for e in events} == {"bytes_received_cumulative"}
    assert [e["num_bytes"] for e in events] == [10000, 20000, 10000, 20000]
    assert events[0]["address"] == "192.0.2.9:443"
    assert events[1]["t"] == pytest.approx(m.probe.throughput[0].t0 + 0.2)


# --- Web Connectivity's analysis keys, per censorship scenario ---------------------------------

EXPECTED_WC = {  # scenario -> (accessible, blocking, dns_consistency)
    "clean": (True, False, "consistent"),
    "throttled": (True, False, "consistent"),
    "dns_nxdomain": (False, "dns", "inconsistent"),
    "dns_forged": (False, "dns", "inconsistent"),
    "dns_injection": (False, "dns", "inconsistent"),
    "dns_bogon": (False, "dns", "inconsistent"),
    "ip_blackhole": (False, "tcp_ip", "consistent"),
    "rst_after_client_hello": (False, "http-failure", "consistent"),
    "drop_after_client_hello": (False, "http-failure", "consistent"),
    "http_blockpage": (False, "http-diff", "consistent"),
    "down_everywhere": (False, False, "consistent"),
    "no_control": (None, None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_WC))
def test_web_connectivity_keys_follow_our_verdict(name):
    keys = to_ooni(all_cases()[name], REPORT, VANTAGE)["test_keys"]
    assert (keys["accessible"], keys["blocking"], keys["dns_consistency"]) == EXPECTED_WC[name]
    verdict = all_cases()[name].verdict
    assert keys["probe_blocking"] == verdict.blocking and keys["verdict"] == verdict.verdict


def test_control_in_the_test_helpers_shape():
    down = to_ooni(all_cases()["down_everywhere"], REPORT, VANTAGE)["test_keys"]["control"]
    assert down["dns"] == {"failure": "dns_name_error", "addrs": []}  # the helper's NXDOMAIN
    keys = to_ooni(all_cases()["clean"], REPORT, VANTAGE)["test_keys"]
    control = keys["control"]
    assert control["tls_handshake"] == {f"{F.REAL}:443": {"server_name": F.DOMAIN,
                                                          "status": True, "failure": None}}
    assert control["http_request"] == {"body_length": 1234, "failure": None, "title": "Twitter",
                                       "headers": {}, "status_code": 200}
    assert control["ip_info"] == {F.REAL: {"asn": 0, "flags": 1 | 2 | 8}}
    forged = to_ooni(all_cases()["dns_bogon"], REPORT, VANTAGE)["test_keys"]["control"]
    assert forged["ip_info"] == {F.BOGON: {"asn": 0, "flags": 1 | 4}, F.REAL: {"asn": 0,
                                                                                "flags": 2 | 8}}
    assert to_ooni(all_cases()["no_control"], REPORT, VANTAGE)["test_keys"]["control"] is None


def test_http_matches_as_web_connectivity_computes_them():
    page = F.http(title="Twitter. It's what's happening")
    page = dataclasses.replace(page, headers=(("X-Twitter", "1"), ("Date", "now")))
    same = http_matches(page, page)
    assert same == {"body_proportion": 1.0, "body_length_match": True, "headers_match": True,
                    "status_code_match": True, "title_match": True}
    blockpage = dataclasses.replace(F.http(title="Доступ ограничен", status=451),
                                    body_length=300, headers=(("Date", "now"),))
    diff = http_matches(blockpage, page)
    assert diff == {"body_proportion": pytest.approx(300 / 1234), "body_length_match": False,
                    "headers_match": False, "status_code_match": False, "title_match": False}
    assert set(http_matches(F.http(failure="connection_reset"), page).values()) == {None}


# --- the measuring side keeps what the format needs, over loopback ------------------------------


async def test_tls_keeps_the_der_chain_even_when_verification_fails(tmp_path):
    pki = ts.make_pki(tmp_path)
    for rogue in (False, True):
        async with ts.raw_server(ts.hold, pki.server_context(rogue=rogue)) as srv:
            r = await tls.measure(Endpoint(ts.HOST, srv.port, ts.NAME),
                                  Settings(timeout=5.0, ca_file=pki.ca_file))
        leaf = (pki.rogue if rogue else pki.cert).cert_chain_pems[0].bytes().decode()
        assert r.chain_der, r
        assert base64.b64decode(r.chain_der[0]) == ssl.PEM_cert_to_DER_cert(leaf)
        assert (r.failure is None) is (not rogue)
        assert len(r.chain_der) <= tls.MAX_CHAIN


class _CnameServer(asyncio.DatagramProtocol):
    """Answers every query with a CNAME (TTL 300) to a name that has an A record (TTL 42)."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        reply.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", "edge.example.net."))
        if query.question[0].rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text("edge.example.net.", 42, "IN", "A",
                                                    "192.0.2.7"))
        self.transport.sendto(reply.to_wire(), addr)


async def test_dns_keeps_cnames_and_ttls_and_writes_integer_rcodes():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_CnameServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        settings = Settings(timeout=2.0, dns_linger=0.05)
        a = await dns_measure.measure(DnsQuery("www.example.org", f"udp://127.0.0.1:{port}"),
                                      settings)
        aaaa = await dns_measure.measure(
            DnsQuery("www.example.org", f"udp://127.0.0.1:{port}", "AAAA"), settings)
    finally:
        transport.close()
    assert a.addresses == ("192.0.2.7",) and a.failure is None
    assert a.answers == (DnsAnswer(answer_type="CNAME", value="edge.example.net", ttl=300),
                         DnsAnswer(answer_type="A", value="192.0.2.7", ttl=42))
    assert aaaa.failure == "dns_no_answer" and aaaa.answers[0].answer_type == "CNAME"
    m = dataclasses.replace(F.measurement(), probe=dataclasses.replace(
        F.clean_probe(), dns=(a, aaaa)))
    m = dataclasses.replace(m, verdict=judge(m))
    record = to_ooni(m, REPORT, VANTAGE)
    queries = record["test_keys"]["queries"]
    assert [q["rcode"] for q in queries] == [0, 0]
    assert queries[0]["answers"][1] == {"answer_type": "A", "ipv4": "192.0.2.7", "ttl": 42}
    assert queries[0]["resolver_address"] == f"127.0.0.1:{port}"
    assert loads_as_web_connectivity(record) <= ALLOWED
    assert from_ooni(record) == m


# --- the runner records the system resolver's AAAA answer, and only records it ------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the ISP resolver needs port 53 (root)")
async def test_runner_records_aaaa_without_connecting_to_it(lab, isp) -> None:
    isp.zone["example.test"] = Rule.answer("127.0.0.1", "::1")
    m = await measure_target(test_runner.target(lab), test_runner.plan(lab))
    assert m.verdict.verdict == "accessible", m.verdict
    (aaaa,) = m.probe.dns_aaaa
    assert (aaaa.qtype, aaaa.resolver_kind, aaaa.addresses) == ("AAAA", "system", ("::1",))
    assert all(d.qtype == "A" for d in m.probe.dns)
    assert {t.address for t in m.probe.tcp} == {"127.0.0.1"}  # ::1 is recorded, not measured
    record = to_ooni(m, REPORT, VANTAGE)
    validate(record)
    queries = record["test_keys"]["queries"]
    assert [(q["query_type"], q["engine"]) for q in queries] == [("A", "udp"), ("A", "udp"),
                                                                 ("AAAA", "udp")]
    assert queries[-1]["answers"] == [{"answer_type": "AAAA", "ipv6": "::1", "ttl": 60}]
    assert loads_as_web_connectivity(record) <= ALLOWED
    assert from_ooni(record) == m
