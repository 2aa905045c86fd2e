"""Verdict rules: table invariants, one test per censorship case, and properties over any evidence."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import factories as F
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from probe import failures
from probe.model import (
    DnsResponse,
    DnsResult,
    Evidence,
    HttpResult,
    TargetMeasurement,
    TcpResult,
    ThrottleEstimate,
    TlsResult,
)
from probe.verdict import RULES, RULES_VERSION, facts, judge, verdict_of
from probe.verdict.rules import BLOCKINGS, VERDICTS

# --- the table ----------------------------------------------------------------------------------


def test_rule_ids_are_unique_and_dotted():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(i.count(".") == 1 and i == i.lower() for i in ids)


def test_rule_values_are_known():
    assert RULES_VERSION
    for rule in RULES:
        assert rule.verdict in VERDICTS, rule.id
        assert (rule.blocking in BLOCKINGS) == (rule.verdict == "blocked"), rule.id
        assert rule.description.endswith(".") and rule.reason, rule.id


def test_last_rule_always_holds():
    assert RULES[-1].when(None) is True  # the catch-all needs no facts


def test_judging_imports_no_network_library():
    """The verdict side is pure: importing it pulls in neither aiohttp, dnspython nor ssl."""
    code = ("import sys, probe.verdict, probe.failures, probe.throttling.decide; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'dns', 'ssl'}"
            " or m.startswith('probe.measure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_failure_groups_are_known_failures():
    for group in (failures.PEER_ANSWERED, failures.CERT_FAILURES, failures.INTERFERENCE,
                  failures.DNS_NEGATIVE):
        assert group <= failures.FAILURES


# --- the cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(F.scenarios()))
def test_scenario(name):
    measurement, verdict, blocking = F.scenarios()[name]
    result = judge(measurement)
    assert (result.verdict, result.blocking) == (verdict, blocking), result
    assert result.rules_version == RULES_VERSION
    assert result.reason.endswith(".") and "{" not in result.reason
    assert any(r.id == result.rule for r in RULES)


def test_rst_names_the_decisive_failure_and_rule():
    result = judge(F.measurement(F.tls_broken("connection_reset")))
    assert (result.rule, result.failure) == ("tls.sni_reset", "connection_reset")


def test_eof_after_client_hello():
    assert judge(F.measurement(F.tls_broken("eof_error"))).rule == "tls.sni_eof"


def test_sni_blocking_needs_no_helper():
    """The control SNI to the same address is a control of its own."""
    probe = dataclasses.replace(F.tls_broken("connection_reset"), dns=(F.dns(), F.dns(kind="tls")))
    result = judge(F.measurement(probe, Evidence()))
    assert (result.verdict, result.blocking) == ("blocked", "tls")


def test_tls_mitm():
    probe = dataclasses.replace(F.clean_probe(), tls=(F.tls(valid=False),),
                                http=(F.http(failure="ssl_unknown_authority"),))
    result = judge(F.measurement(probe))
    assert (result.verdict, result.blocking, result.rule) == ("blocked", "tls", "tls.mitm")


def test_consistency_through_control_resolver():
    """A control resolver queried by the probe itself is control DNS."""
    probe = dataclasses.replace(F.clean_probe(), dns=(F.dns(), F.dns(kind="udp")))
    assert judge(F.measurement(probe, Evidence(), "control-resolver")).verdict == "accessible"


def test_cdn_answer_proven_by_certificate():
    """Different answers from the control's are fine when they serve a valid certificate."""
    result = judge(F.measurement(F.clean_probe(F.REAL2)))
    assert result.verdict == "accessible"


def test_helper_on_forged_address_does_not_mask_dns_blocking():
    control = dataclasses.replace(F.clean_control(), tcp=(F.tcp(), F.tcp(F.FORGED, "connection_refused")))
    forged = F.scenarios()["dns_forged"][0].probe
    assert judge(F.measurement(forged, control)).blocking == "dns"


@pytest.mark.parametrize("control", [
    Evidence(dns=(F.dns(kind="helper"),), tcp=(F.tcp(failure="connection_refused"),)),
    Evidence(dns=(F.dns(kind="helper"),), tcp=(F.tcp(),), http=(F.http(failure="eof_error"),)),
])
def test_down_when_helper_fails_too(control):
    result = judge(F.measurement(F.tls_broken("connection_reset"), control))
    assert result.verdict == "down" and result.blocking is None


def test_http_failure_while_helper_fetches():
    probe = dataclasses.replace(F.clean_probe(), http=(F.http(failure="connection_reset"),))
    result = judge(F.measurement(probe))
    assert (result.verdict, result.blocking, result.rule) == ("blocked", "http", "http.failure")


def test_plain_http_diff():
    url = f"http://{F.DOMAIN}/"
    probe = Evidence(dns=(F.dns(),), tcp=(F.tcp(port=80),), http=(F.http(url, status=302),))
    control = Evidence(dns=(F.dns(kind="helper"),), http=(F.http(url),))
    assert judge(F.measurement(probe, control)).rule == "http.diff"


@pytest.mark.parametrize(("state", "verdict"), [
    ("throttled", "throttled"), ("degraded", "degraded"), ("clean", "accessible"),
    ("inconclusive", "accessible"),
])
def test_throttle(state, verdict):
    estimate = F.estimate(state, ratio=0.1 if state == "throttled" else 1.0)
    result = judge(F.measurement(), estimate)
    assert result.verdict == verdict and result.throttling == estimate
    assert result.blocking is None


def test_throttle_never_hides_blocking():
    result = judge(F.measurement(F.tls_broken("connection_reset")), F.estimate("throttled", 0.1))
    assert result.verdict == "blocked"


def test_slow_body_is_not_blocking():
    """A response whose body read times out got through: speed is throughput's business."""
    probe = dataclasses.replace(F.clean_probe(),
                                http=(F.http(failure="generic_timeout_error", operation="read"),))
    assert judge(F.measurement(probe)).verdict == "accessible"
    assert judge(F.measurement(probe), F.estimate("throttled", 0.1)).verdict == "throttled"


# --- properties ---------------------------------------------------------------------------------

ADDRESSES = st.sampled_from([F.REAL, F.REAL2, F.FORGED, F.BOGON, "::1", "not-an-ip"])
FAILURE = st.none() | st.sampled_from(sorted(failures.FAILURES))
SNI = st.sampled_from([F.DOMAIN, F.CONTROL_SNI, None])
RCODE = st.sampled_from(["NOERROR", "NXDOMAIN", "SERVFAIL"])
OPERATION = st.none() | st.sampled_from(["resolve", "connect", "tls_handshake", "read"])
addresses = st.lists(ADDRESSES, max_size=3).map(tuple)

responses = st.builds(DnsResponse, t=st.floats(0, 1), rcode=RCODE, addresses=addresses)
dns_results = st.builds(
    DnsResult, domain=st.just(F.DOMAIN), resolver=st.just("system"),
    resolver_kind=st.sampled_from(["system", "udp", "tls", "https", "helper"]),
    rcode=st.none() | RCODE, addresses=addresses, failure=FAILURE,
    responses=st.lists(responses, max_size=3).map(tuple),
    fingerprint=st.none() | st.just("ooni.ru_96"),
)
tcp_results = st.builds(TcpResult, address=ADDRESSES, port=st.just(443), failure=FAILURE)
tls_results = st.builds(TlsResult, address=ADDRESSES, port=st.just(443), sni=SNI,
                        failure=FAILURE, operation=OPERATION,
                        cert_valid_for_name=st.none() | st.booleans())
http_results = st.builds(
    HttpResult, url=st.sampled_from([f"https://{F.DOMAIN}/", f"http://{F.DOMAIN}/"]),
    address=st.none() | ADDRESSES, status=st.none() | st.sampled_from([200, 302, 403, 451]),
    failure=FAILURE, operation=OPERATION, title=st.none() | st.text(max_size=5),
    blockpage=st.none() | st.just("ru.rkn"),
)


def _tuples(strategy):
    return st.lists(strategy, max_size=3).map(tuple)


evidence = st.builds(Evidence, dns=_tuples(dns_results), tcp=_tuples(tcp_results),
                     tls=_tuples(tls_results), http=_tuples(http_results))
estimates = st.none() | st.sampled_from(["throttled", "degraded", "clean", "inconclusive"]).map(
    F.estimate)


def _control_shows_down(control: Evidence, probe: Evidence) -> bool:
    """An independent, plain reading of "down everywhere".

    A helper's failed connects count only to addresses a control gave (its own resolver's, or
    the control resolver's): the probe's own answers may be forged, and failing to reach a
    forged address says nothing about the target. The helper's resolver alone saying NXDOMAIN
    while a control resolver resolves the name is a broken control, not "down"; and a known
    blockpage at the probe's own answer is DNS blocking even then (OONI's ghost DNS)."""
    if any(h.blockpage for h in probe.http):
        return False
    if any(d.fingerprint for d in probe.dns if d.resolver_kind == "system"):
        return False  # a known blockpage address: the censor's own answer is the proof
    resolvers_resolve = any(d.addresses for d in probe.dns if d.resolver_kind != "system")
    if control.dns and not resolvers_resolve and all(
            d.rcode == "NXDOMAIN" and not d.addresses for d in control.dns):
        return True
    vouched = {a for d in (*control.dns, *probe.dns) if d.resolver_kind != "system"
               for a in d.addresses}
    connects = [t for t in control.tcp if not vouched or t.address in vouched]
    if not control.dns and connects and all(t.failure for t in connects):
        return True
    return bool(control.http) and all(h.status is None for h in control.http)


@settings(max_examples=400, deadline=None)
@given(probe=evidence, control=evidence, throttle=estimates)
def test_judge_never_raises_and_is_well_formed(probe, control, throttle):
    m = TargetMeasurement(target=F.target(), start_time=0.0, runtime=0.0, probe=probe,
                          control=control)
    result = judge(m, throttle)
    assert result.verdict in VERDICTS
    assert (result.blocking is not None) == (result.verdict == "blocked")
    assert "{" not in result.reason
    assert result.failure is None or result.failure in failures.FAILURES | {"dns_bogon_error"}
    assert judge(m, throttle) == result  # pure


@settings(max_examples=200, deadline=None)
@given(probe=evidence, control=evidence, throttle=estimates)
def test_facts_read_before_the_throughput_test_judge_it_too(probe, control, throttle):
    """The runner boils a target down once, before its flows exist, and judges the throttle
    estimate on those facts: no fact may read the flows."""
    before = TargetMeasurement(target=F.target(), start_time=0.0, runtime=0.0, probe=probe,
                               control=control)
    after = dataclasses.replace(before, probe=dataclasses.replace(
        probe, throughput=(F.throughput(1e5), F.throughput(5e7, sni="control.example"))))
    seen = facts(before)
    assert facts(after) == seen
    assert verdict_of(dataclasses.replace(seen, throttle=throttle)) == judge(after, throttle)


@settings(max_examples=400, deadline=None)
@given(probe=evidence, control=evidence)
@example(  # found by hypothesis: the helper fails only on an address no control gave
    probe=Evidence(dns=(F.dns((), extra=(("104.244.42.1",),)),
                        F.dns(("104.244.42.1",), kind="udp"))),
    control=Evidence(tcp=(F.tcp("104.244.42.65", "connection_aborted"),)),
)
def test_never_blocked_when_control_is_down(probe, control):
    m = TargetMeasurement(target=F.target(), start_time=0.0, runtime=0.0, probe=probe,
                          control=control)
    if _control_shows_down(control, probe):
        assert judge(m).verdict != "blocked"


def test_blockpage_behind_a_forged_dns_answer_is_dns_blocking():
    """The lab's dns_forged_blockpage: plain HTTP, the ISP resolver points at its blockpage host."""
    url = f"http://{F.DOMAIN}/"
    probe = Evidence(dns=(F.dns((F.FORGED,)), F.dns(kind="udp")), tcp=(F.tcp(F.FORGED, port=80),),
                     http=(F.http(url=url, blockpage="lab", address=F.FORGED),))
    control = Evidence(dns=(F.dns(kind="helper"),), tcp=(F.tcp(port=80),), http=(F.http(url=url),))
    result = judge(F.measurement(probe, control, tgt=F.target(url=url)))
    assert (result.verdict, result.blocking, result.rule) == ("blocked", "dns", "dns.blockpage")


def test_transparent_blockpage_with_consistent_dns_is_http_blocking():
    url = f"http://{F.DOMAIN}/"
    probe = Evidence(dns=(F.dns(), F.dns(kind="udp")), tcp=(F.tcp(port=80),),
                     http=(F.http(url=url, blockpage="lab"),))
    control = Evidence(dns=(F.dns(kind="helper"),), tcp=(F.tcp(port=80),), http=(F.http(url=url),))
    result = judge(F.measurement(probe, control, tgt=F.target(url=url)))
    assert (result.verdict, result.blocking, result.rule) == ("blocked", "http", "http.blockpage")


def test_control_sni_certificate_does_not_vouch_for_forged_address():
    """The helper's valid handshake for another name at the forged address proves nothing."""
    control = dataclasses.replace(F.clean_control(),
                                  tls=(F.tls(), F.tls(F.FORGED, sni=F.CONTROL_SNI)))
    forged = F.scenarios()["dns_forged"][0].probe
    assert judge(F.measurement(forged, control)).rule == "dns.inconsistent"


@settings(max_examples=300, deadline=None)
@given(probe=st.from_type(Evidence), control=st.from_type(Evidence),
       throttle=st.none() | st.from_type(ThrottleEstimate), url=st.text(max_size=30))
@example(probe=Evidence(), control=Evidence(), throttle=None, url="http://[")
def test_judge_never_raises_on_wild_evidence(probe, control, throttle, url):
    """Any strings anywhere (bad addresses, unknown failures, odd URLs): a verdict, no exception."""
    target = dataclasses.replace(F.target(), url=url)
    m = TargetMeasurement(target=target, start_time=0.0, runtime=0.0, probe=probe,
                          control=control)
    assert judge(m, throttle).verdict in VERDICTS


# --- several controls: which one decided, and when they disagree or break ---------------------


def test_ghost_dns_blockpage_is_dns_blocking_though_the_name_resolves_nowhere():
    """OONI's ghost DNS: the name exists nowhere, but the probe's resolver answers with the
    address of a known blockpage host."""
    url = f"http://{F.DOMAIN}/"
    probe = Evidence(dns=(F.dns((F.FORGED,)), F.nxdomain(kind="https")),
                     tcp=(F.tcp(F.FORGED, port=80),),
                     http=(F.http(url=url, blockpage="ru.rkn", address=F.FORGED),))
    control = Evidence(dns=(F.nxdomain(kind="helper"),))
    v = judge(F.measurement(probe, control, tgt=F.target(url=url)))
    assert (v.verdict, v.blocking, v.rule) == ("blocked", "dns", "dns.ghost_blockpage")
    # without a known blockpage the same evidence is never called blocked
    quiet = Evidence(dns=probe.dns, tcp=probe.tcp, http=(F.http(url=url, address=F.FORGED),))
    assert judge(F.measurement(quiet, control, tgt=F.target(url=url))).verdict != "blocked"


def test_a_helper_with_a_dead_resolver_is_a_broken_control_not_an_outage():
    probe = Evidence(dns=(F.nxdomain(), F.dns(kind="https")))
    control = Evidence(dns=(F.dns((), kind="helper", rcode="SERVFAIL",
                                  failure="dns_servfail_error"),))
    v = judge(F.measurement(probe, control))
    assert (v.verdict, v.rule) == ("blocked", "dns.nxdomain")
    assert v.decided_by == "https://dns.example/dns-query"
    assert any("broken control" in note for note in v.notes)


def test_control_resolvers_that_disagree_are_noted_and_counted_together():
    first = F.dns((F.REAL,), kind="https")
    other = dataclasses.replace(F.dns((F.REAL2,), kind="https"),
                                resolver="https://9.9.9.9/dns-query")
    probe = dataclasses.replace(F.clean_probe(), dns=(F.dns((F.REAL2,)), first, other))
    v = judge(F.measurement(probe, Evidence()))
    assert v.verdict == "accessible"  # the probe's answer matches one of them
    assert v.decided_by == "https://dns.example/dns-query, https://9.9.9.9/dns-query"
    assert [n for n in v.notes if "disagree" in n]


def test_each_verdict_names_the_control_it_rests_on():
    assert judge(F.measurement(F.tls_broken("connection_reset"))).decided_by.startswith(
        "control SNI at ")
    blackholed = Evidence(dns=(F.dns(),), tcp=(F.tcp(failure=F.TIMEOUT),))
    assert judge(F.measurement(blackholed)).decided_by == "helper"


# --- a known blockpage address in the probe's DNS answer (OONI's DNS fingerprints) -------------

BLOCKPAGE_IP = "5.3.3.17"  # ooni.ru_96, ER-Telecom's blockpage host; never contacted by tests


def _fingerprinted(kind: str = "system") -> DnsResult:
    return dataclasses.replace(F.dns((BLOCKPAGE_IP,), kind=kind), fingerprint="ooni.ru_96")


def test_known_blockpage_address_is_dns_blocking_without_any_control():
    probe = Evidence(dns=(_fingerprinted(),), tcp=(F.tcp(BLOCKPAGE_IP, port=80),))
    v = judge(F.measurement(probe, Evidence()))
    assert (v.verdict, v.blocking, v.rule) == ("blocked", "dns", "dns.blockpage_address")
    assert "ooni.ru_96" in v.reason
    # the same answer with no fingerprint, and no control: nothing to judge by
    plain = Evidence(dns=(F.dns((BLOCKPAGE_IP,)),), tcp=probe.tcp)
    assert judge(F.measurement(plain, Evidence())).verdict == "inconclusive"


def test_known_blockpage_address_is_blocking_even_where_the_name_resolves_nowhere():
    probe = Evidence(dns=(_fingerprinted(),))
    v = judge(F.measurement(probe, Evidence(dns=(F.nxdomain(kind="helper"),))))
    assert (v.verdict, v.rule) == ("blocked", "dns.blockpage_address")


def test_known_blockpage_address_proven_real_by_a_certificate_is_not_blocking():
    """A fingerprint is evidence, not proof: a valid handshake for the name at that address
    (a censor's host that also serves the site?) makes the answer consistent."""
    probe = Evidence(dns=(_fingerprinted(),), tcp=(F.tcp(BLOCKPAGE_IP),),
                     tls=(F.tls(BLOCKPAGE_IP),), http=(F.http(address=BLOCKPAGE_IP),))
    v = judge(F.measurement(probe, Evidence()))
    assert v.rule != "dns.blockpage_address" and v.verdict == "accessible"


def test_a_fingerprint_on_a_control_resolvers_answer_is_not_the_probes():
    probe = dataclasses.replace(F.clean_probe(), dns=(F.dns(), _fingerprinted(kind="udp")))
    assert judge(F.measurement(probe)).rule != "dns.blockpage_address"


def test_blockpage_address_rule_sits_with_the_dns_rules_before_the_outage_rules():
    ids = [r.id for r in RULES]
    assert ids.index("dns.ghost_blockpage") < ids.index("dns.blockpage_address") \
        < ids.index("down.control_dns")
    rule = RULES[ids.index("dns.blockpage_address")]
    assert rule.overrides_down and rule.uses == "" and RULES_VERSION == "2026.3"
