"""Each censor rule, proven to act in the namespaces: seen from the client with plain sockets
(probe.lab.checks), beside a control that must stay untouched."""

from __future__ import annotations

import pytest

from probe.lab import scenarios
from probe.lab import topology as t
from probe.lab.servers import BLOCKPAGE_MARK

pytestmark = pytest.mark.lab
BIG = "/media/big.bin"


def test_clean_everything_answers(lab_factory, check) -> None:
    lab = lab_factory("clean")
    for name in ("www.example.com", "twitter.com", "navalny.com"):
        got = check(lab, "https", name)
        assert got.get("status") == 200 and name in got["body"], got
    for transport in ("udp", "tls", "https"):  # the trusted resolver on all three transports
        got = check(lab, "resolve", "navalny.com", "--server", t.TRUSTED_RESOLVER,
                    "--transport", transport)
        assert got["addresses"] == [t.ORIGINS["navalny.com"]], (transport, got)


def test_dns_nxdomain_from_the_isp_resolver_only(lab_factory, check) -> None:
    lab = lab_factory("dns_nxdomain")
    assert check(lab, "resolve", "navalny.com")["rcode"] == "NXDOMAIN"
    trusted = check(lab, "resolve", "navalny.com", "--server", t.TRUSTED_RESOLVER)
    assert trusted["addresses"] == [t.ORIGINS["navalny.com"]]
    assert check(lab, "resolve", "www.example.com")["addresses"] == [t.ORIGINS["www.example.com"]]


def test_dns_forged_answer_leads_to_the_blockpage(lab_factory, check) -> None:
    lab = lab_factory("dns_forged_blockpage")
    assert check(lab, "resolve", "navalny.com")["addresses"] == [t.BLOCKPAGE_IP]
    assert check(lab, "https", "navalny.com")["failure"] == "ssl_invalid_hostname"
    page = check(lab, "http", "http://navalny.app/")
    assert BLOCKPAGE_MARK in page["body"]


def test_dns_injection_two_answers_forged_first(lab_factory, check) -> None:
    lab = lab_factory("dns_injection")
    got = check(lab, "resolve", "twitter.com")
    assert [a["addresses"] for a in got["answers"]] == [[t.BLOCKPAGE_IP],
                                                        [t.ORIGINS["twitter.com"]]]
    control = check(lab, "resolve", "www.example.com")
    assert len(control["answers"]) == 1


def test_ip_blackhole_times_out_the_connect(lab_factory, check) -> None:
    lab = lab_factory("ip_blackhole")
    got = check(lab, "https", "navalny.com", "--timeout", "1")
    assert (got["failure"], got["operation"]) == ("generic_timeout_error", "connect")
    assert check(lab, "https", "www.example.com")["status"] == 200


def test_tls_rst_by_sni_not_by_address(lab_factory, check) -> None:
    lab = lab_factory("tls_rst")
    for name in ("navalny.com", "shtab.navalny.com", "navalny.app"):
        got = check(lab, "https", name)
        assert (got["failure"], got["operation"]) == ("connection_reset", "tls_handshake"), got
    # Same server, innocent SNI: untouched. Innocent server, blocked SNI: reset.
    assert check(lab, "https", "navalny.com", "--sni", "www.example.com")["status"] == 200
    swapped = check(lab, "https", "www.example.com", "--sni", "navalny.com")
    assert swapped["failure"] == "connection_reset"


@pytest.mark.parametrize("scenario,name", [("tls_drop", "votesmart.appspot.com"),
                                           ("tls_sni2", "navalny.com")])
def test_tls_handshake_stalls(lab_factory, check, scenario: str, name: str) -> None:
    lab = lab_factory(scenario)
    got = check(lab, "https", name, "--timeout", "1.5")
    assert (got["failure"], got["operation"]) == ("generic_timeout_error", "tls_handshake"), got
    assert check(lab, "https", "www.example.com")["status"] == 200


def test_http_blockpage_for_the_host_only(lab_factory, check) -> None:
    lab = lab_factory("http_blockpage")
    assert BLOCKPAGE_MARK in check(lab, "http", "http://navalny.com/")["body"]
    relayed = check(lab, "http", "http://www.example.com/")
    assert "probe-lab origin www.example.com" in relayed["body"]
    assert "probe-lab origin navalny.com" in check(lab, "https", "navalny.com")["body"]


def test_origin_down_refuses(lab_factory, check) -> None:
    lab = lab_factory("origin_down")
    assert check(lab, "https", "navalny.com")["failure"] == "connection_refused"
    assert check(lab, "https", "www.example.com")["status"] == 200


def test_throttle_twimg_polices_the_sni_at_about_140_kbit(lab_factory, check) -> None:
    lab = lab_factory("throttle_twimg")
    slow = check(lab, "rate", f"https://abs.twimg.com{BIG}", "--timeout", "4")
    assert 40_000 < slow["bps"] < 200_000, slow
    # The SNI decides, not the server: the same origin with a twimg SNI is policed too.
    swapped = check(lab, "rate", f"https://twitter.com{BIG}", "--sni", "pbs.twimg.com",
                    "--timeout", "3")
    assert swapped["bps"] < 200_000, swapped
    fast = check(lab, "rate", f"https://twitter.com{BIG}", "--timeout", "3")
    assert fast["bytes"] == 4 << 20 or fast["bps"] > 10_000_000, fast


def test_throttle_tco_substring_catches_rt_com(lab_factory, check) -> None:
    lab = lab_factory("throttle_tco_substring")
    assert check(lab, "rate", f"https://rt.com{BIG}", "--timeout", "3")["bps"] < 200_000
    fast = check(lab, "rate", f"https://twitter.com{BIG}", "--timeout", "3")
    assert fast["bps"] > 10_000_000, fast


def test_congested_link_slows_everyone(lab_factory, check) -> None:
    lab = lab_factory("congested_link")
    got = check(lab, "rate", f"https://www.example.com{BIG}", "--timeout", "2")
    assert 1_000_000 < got["bps"] < 2_500_000, got


def test_random_loss_drops_packets_of_every_flow(lab_factory, check) -> None:
    lab = lab_factory("random_loss")
    got = check(lab, "rate", f"https://www.example.com{BIG}", "--timeout", "3")
    assert got["bytes"] > 1 << 20, got  # TCP recovers from random loss
    counters = lab.exec(["iptables", "-w", "5", "-L", "FORWARD", "-v", "-x", "-n"],
                        ns=lab.names.censor).stdout
    dropped = next(int(line.split()[0]) for line in counters.splitlines() if "statistic" in line)
    assert dropped > 0, counters


def test_slow_origin_is_slow_for_every_sni(lab_factory, check) -> None:
    lab = lab_factory("slow_origin")
    for sni in ("pbs.twimg.com", "www.example.com"):
        got = check(lab, "rate", f"https://pbs.twimg.com{BIG}", "--sni", sni, "--timeout", "2")
        assert 200_000 < got["bps"] < 500_000, got


def test_shape_queues_matched_flows_in_a_slow_htb_class(lab_factory, check) -> None:
    shaped = scenarios.parse({
        "name": "shape_twimg", "description": "shaping instead of policing",
        "rules": [{"action": "shape", "sni": ["*.twimg.com"], "rate_bps": 800_000}],
        "targets": [{"domain": "abs.twimg.com", "expect": "throttled"}]})
    lab = lab_factory(shaped)
    slow = check(lab, "rate", f"https://abs.twimg.com{BIG}", "--timeout", "3")
    assert 500_000 < slow["bps"] < 1_000_000, slow  # queued, so close to the class rate
    fast = check(lab, "rate", f"https://twitter.com{BIG}", "--timeout", "3")
    assert fast["bps"] > 10_000_000, fast
