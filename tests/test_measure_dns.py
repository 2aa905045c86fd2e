"""probe.measure.dns against the in-process server of tests/dnsserver.py, one row per outcome."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from dnsserver import DnsServer, Rule

from probe import failures
from probe.measure import dns as dnsmeasure
from probe.model import DnsQuery, Settings

ZONE = {
    "ok.test": Rule.answer("192.0.2.1", "192.0.2.2"),
    "nx.test": Rule("nxdomain"),
    "servfail.test": Rule("servfail"),
    "refused.test": Rule("refused"),
    "empty.test": Rule("empty"),
    "drop.test": Rule("drop"),
    "inject.test": Rule.inject(forged="10.10.34.35", real="192.0.2.7", delay=0.05),
}


def settings(server: DnsServer, **kw: object) -> Settings:
    values: dict = {"timeout": 1.0, "dns_linger": 0.2, "ca_file": server.ca_file} | kw
    return Settings(**values)


@pytest.fixture
async def server():
    async with DnsServer(ZONE) as running:
        yield running


# domain, expected failure, expected rcode, expected addresses of the first answer
UDP_ROWS = [
    ("ok.test", None, "NOERROR", ("192.0.2.1", "192.0.2.2")),
    ("nx.test", failures.DNS_NXDOMAIN, "NXDOMAIN", ()),
    ("servfail.test", failures.DNS_SERVFAIL, "SERVFAIL", ()),
    ("refused.test", failures.DNS_REFUSED, "REFUSED", ()),
    ("empty.test", failures.DNS_NO_ANSWER, "NOERROR", ()),
    ("drop.test", failures.TIMEOUT, None, ()),
]


@pytest.mark.parametrize(("domain", "failure", "rcode", "addresses"), UDP_ROWS)
async def test_udp_outcomes(server, domain, failure, rcode, addresses):
    result = await dnsmeasure.measure(DnsQuery(domain, server.udp_url), settings(server))
    assert (result.failure, result.rcode, result.addresses) == (failure, rcode, addresses)
    assert result.operation == (failures.RESOLVE if failure else None)
    assert result.resolver == server.udp_url and result.resolver_kind == "udp"
    assert len(result.responses) == (0 if rcode is None else 1)
    assert server.udp_queries == 1  # sent once, never retried


async def test_udp_timeout_is_bounded(server):
    result = await dnsmeasure.measure(DnsQuery("drop.test", server.udp_url), settings(server, timeout=0.3))
    assert result.failure == failures.TIMEOUT
    assert 0.25 < result.elapsed < 1.0


async def test_udp_lingers_after_first_answer(server):
    result = await dnsmeasure.measure(DnsQuery("ok.test", server.udp_url), settings(server))
    assert 0.18 < result.elapsed < 0.8  # dns_linger = 0.2 s spent listening for a second answer
    assert result.responses[0].source == f"127.0.0.1:{server.udp_port}"


async def test_injection_records_both_answers_forged_first(server):
    result = await dnsmeasure.measure(DnsQuery("inject.test", server.udp_url), settings(server))
    forged, real = result.responses
    assert forged.addresses == ("10.10.34.35",) and real.addresses == ("192.0.2.7",)
    assert forged.t < real.t and real.t - forged.t > 0.03
    assert result.addresses == ("10.10.34.35",) and result.failure is None


async def test_second_answer_after_linger_is_not_waited_for(server):
    server.zone["late.test"] = Rule.inject(forged="10.0.0.1", real="192.0.2.9", delay=0.5)
    result = await dnsmeasure.measure(DnsQuery("late.test", server.udp_url), settings(server))
    assert [r.addresses for r in result.responses] == [("10.0.0.1",)]
    assert result.elapsed < 0.45


async def test_closed_udp_port_is_refused():
    port = _free_udp_port()
    result = await dnsmeasure.measure(
        DnsQuery("ok.test", f"udp://127.0.0.1:{port}"), Settings(timeout=1.0, dns_linger=0.1)
    )
    assert result.failure == failures.CONNECTION_REFUSED and result.responses == ()


async def test_aaaa_query(server):
    server.zone["v6.test"] = Rule.answer("192.0.2.1", "2001:db8::1")
    result = await dnsmeasure.measure(DnsQuery("v6.test", server.udp_url, "AAAA"), settings(server))
    assert result.addresses == ("2001:db8::1",) and result.qtype == "AAAA"


@pytest.mark.parametrize("kind", ["tls", "https"])
@pytest.mark.parametrize(
    ("domain", "failure", "addresses"),
    [
        ("ok.test", None, ("192.0.2.1", "192.0.2.2")),
        ("nx.test", failures.DNS_NXDOMAIN, ()),
        ("inject.test", None, ("192.0.2.7",)),  # a stream carries the real answer only
        ("drop.test", failures.TIMEOUT, ()),
    ],
)
async def test_encrypted_transports(server, kind, domain, failure, addresses):
    url = server.tls_url if kind == "tls" else server.https_url
    result = await dnsmeasure.measure(DnsQuery(domain, url), settings(server, timeout=0.5))
    assert (result.failure, result.addresses) == (failure, addresses)
    assert result.resolver_kind == kind and result.resolver == url
    assert len(result.responses) == (0 if failure == failures.TIMEOUT else 1)
    assert result.elapsed < 1.0


@pytest.mark.parametrize("kind", ["tls", "https"])
async def test_untrusted_certificate(server, kind, tmp_path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    url = server.tls_url if kind == "tls" else server.https_url
    result = await dnsmeasure.measure(DnsQuery("ok.test", url), settings(server, ca_file=str(other)))
    assert result.failure == failures.SSL_UNKNOWN_AUTHORITY
    assert result.operation == failures.RESOLVE and result.responses == ()


def test_system_nameserver_reads_the_first_nameserver(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# netns\nsearch lab\nnameserver 10.0.9.53\nnameserver 10.0.9.54\noptions ndots:1\n")
    assert dnsmeasure.system_nameserver(str(conf)) == "10.0.9.53"


async def test_system_resolver_reads_resolv_conf_at_call_time(tmp_path, monkeypatch):
    """resolv.conf has no port, so this needs port 53 on a loopback address of its own."""
    host = "127.0.83.53"
    server = DnsServer(ZONE)
    try:
        await server.start(host=host, udp_port=53)
    except PermissionError:
        await server.close()
        pytest.skip("binding port 53 needs root")
    except OSError as exc:
        await server.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        pytest.skip(f"{host}:53 is in use")
    try:
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {host}\n")
        monkeypatch.setattr(dnsmeasure, "RESOLV_CONF", str(conf))
        result = await dnsmeasure.measure(DnsQuery("ok.test"), settings(server))
    finally:
        await server.close()
    assert result.failure is None and result.addresses == ("192.0.2.1", "192.0.2.2")
    assert result.resolver_kind == "system" and result.resolver == f"udp://{host}:53"


async def test_missing_resolv_conf_is_a_failure_not_an_exception(tmp_path, monkeypatch):
    monkeypatch.setattr(dnsmeasure, "RESOLV_CONF", str(tmp_path / "absent"))
    result = await dnsmeasure.measure(DnsQuery("ok.test"), Settings(timeout=0.5))
    assert result.failure in failures.FAILURES and result.operation == failures.RESOLVE


@pytest.mark.parametrize(
    "bad", ["8.8.8.8", "udp://dns.google", "tcp://1.1.1.1", "tls://", "udp://1.1.1.1:99999", "udp://1.1.1.1/x"]
)
async def test_bad_resolver_url(bad):
    with pytest.raises(ValueError, match="resolver"):
        dnsmeasure.parse_resolver(bad)
    result = await dnsmeasure.measure(DnsQuery("ok.test", bad), Settings(timeout=0.5))
    assert result.failure in failures.FAILURES and result.responses == ()


@pytest.mark.parametrize(("domain", "qtype"), [("a" * 70 + ".test", "A"), ("ok.test", "BOGUS")])
async def test_unusable_query_is_a_failure_not_an_exception(server, domain, qtype):
    result = await dnsmeasure.measure(DnsQuery(domain, server.udp_url, qtype), settings(server))
    assert result.failure in failures.FAILURES and server.udp_queries == 0


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("udp://192.0.2.53", "udp://192.0.2.53:53"),
        ("udp://[2001:db8::53]:5353", "udp://[2001:db8::53]:5353"),
        ("tls://192.0.2.53", "tls://192.0.2.53:853"),
        ("https://dns.example/dns-query", "https://dns.example:443/dns-query"),
        ("https://192.0.2.53:8443", "https://192.0.2.53:8443/dns-query"),
    ],
)
def test_parse_resolver(url, described):
    assert dnsmeasure.parse_resolver(url).describe() == described


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_zone_rules_reject_unknown_actions():
    with pytest.raises(ValueError):
        Rule("teleport")


# --- `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf --------------

_IN_NAMESPACE = """
import asyncio, json, sys
sys.path.insert(0, "tests")
from dnsserver import DnsServer, Rule
from probe.measure.dns import measure
from probe.model import DnsQuery, Settings, to_dict

async def main():
    server = DnsServer({"ok.test": Rule.answer("192.0.2.44")})
    await server.start(host="127.0.0.1", udp_port=53)  # the namespace's own loopback
    try:
        return await measure(DnsQuery("ok.test"), Settings(timeout=1.0, dns_linger=0.1))
    finally:
        await server.close()

print(json.dumps(to_dict(asyncio.run(main()))))
"""


@pytest.mark.lab
def test_system_resolver_inside_ip_netns_exec():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root (CAP_NET_ADMIN) and iproute2 for a network namespace")
    ns = f"probeA-dns-{os.getpid()}"
    etc = Path("/etc/netns") / ns
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns does not work here: {exc.stderr.decode().strip()}")
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", _IN_NAMESPACE]
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=root)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        shutil.rmtree(etc, ignore_errors=True)
    assert (result["failure"], result["addresses"]) == (None, ["192.0.2.44"])
    assert (result["resolver"], result["resolver_kind"]) == ("udp://127.0.0.1:53", "system")


async def test_doh_queries_of_a_run_share_one_client(server):
    """Inside a run's scope every DoH query goes through one kept-alive session (as the
    server sees it: queries one after another arrive on one connection); the scope closes it;
    outside a scope each query makes its own connection."""
    from probe.measure import shared

    server.zone["ok.test"] = Rule.answer("192.0.2.1")
    query = DnsQuery("ok.test", server.https_url)
    assert shared.doh_session(server.ca_file) is None
    for _ in range(2):
        assert (await dnsmeasure.measure(query, settings(server))).addresses == ("192.0.2.1",)
    assert len(server.doh_peers) == 2
    server.doh_peers.clear()
    async with shared.scope():
        session = shared.doh_session(server.ca_file)
        assert session is not None and shared.doh_session(server.ca_file) is session
        for _ in range(5):  # one after another: the same connection every time
            result = await dnsmeasure.measure(query, settings(server))
            assert result.addresses == ("192.0.2.1",)
        assert len(server.doh_peers) == 1
        results = await asyncio.gather(*(  # at once (HTTP/1.1): a few, not one per query
            dnsmeasure.measure(query, settings(server)) for _ in range(8)))
        assert all(r.addresses == ("192.0.2.1",) for r in results)
        assert len(server.doh_peers) < 9
    assert session.closed


async def test_started_returns_at_the_first_answer_while_the_query_keeps_listening(server):
    """The caller can connect to the first answer's addresses while the query lingers: the
    forged answer comes first, the real one later, and the result holds both."""
    query, first = await dnsmeasure.started(DnsQuery("inject.test", server.udp_url),
                                            settings(server, dns_linger=2.0))
    assert first is not None and first.addresses == ("10.10.34.35",)
    assert not query.done()  # still listening
    result = await query
    assert [r.addresses for r in result.responses] == [("10.10.34.35",), ("192.0.2.7",)]
    assert result.addresses == first.addresses


async def test_started_without_an_answer_gives_the_ended_query(server):
    query, first = await dnsmeasure.started(DnsQuery("drop.test", server.udp_url),
                                            settings(server, timeout=0.3))
    assert first is None and query.done()
    assert query.result().failure == failures.TIMEOUT


def test_system_nameserver_follows_the_file_as_it_changes(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.9.53\n")
    assert dnsmeasure.system_nameserver(str(conf)) == "10.0.9.53"
    conf.write_text("nameserver 10.0.9.254\n")  # another size: read again
    assert dnsmeasure.system_nameserver(str(conf)) == "10.0.9.254"
    replacement = tmp_path / "other.conf"
    replacement.write_text("nameserver 10.0.9.255\n")  # same size, another file (inode)
    replacement.replace(conf)
    assert dnsmeasure.system_nameserver(str(conf)) == "10.0.9.255"
