"""The UDP DNS exchange against real loopback servers that misbehave on purpose: foreign
datagrams before the answer, floods, ICMP errors, and queries cancelled mid-flight (no socket,
no reader, no unretrieved exception left behind). The ordinary outcomes are in test_measure_dns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
import time
import warnings
from collections.abc import AsyncIterator, Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rdatatype
import dns.rrset
import pytest
from dnsserver import DnsServer, Rule
from hypothesis import given
from hypothesis import strategies as st

from probe import failures
from probe.measure import dns as dnsmeasure
from probe.measure.dnswire import answer_to, query_wire
from probe.model import DnsQuery, Settings

# A script: (the query, the client's address) -> [(delay, datagram)] to send back.
Script = Callable[[dns.message.Message, tuple], list[tuple[float, bytes]]]


class _Scripted(asyncio.DatagramProtocol):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        loop = asyncio.get_running_loop()
        for delay, wire in self.script(dns.message.from_wire(data), addr):
            loop.call_later(delay, self._send, wire, addr)

    def _send(self, wire: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


@contextlib.asynccontextmanager
async def scripted(script: Script, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A UDP server on `host` answering each query with `script`; yields its resolver URL."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Scripted(script), local_addr=(host, 0))
    try:
        netloc = f"[{host}]" if ":" in host else host
        yield f"udp://{netloc}:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()


def reply(query: dns.message.Message, address: str, name: str | None = None, rdtype: str = "A"
          ) -> dns.message.Message:
    message = dns.message.make_response(query)
    owner = dns.name.from_text(name) if name else query.question[0].name
    if name or rdtype != "A":  # an answer to another question
        message.question = [dns.rrset.RRset(owner, 1, dns.rdatatype.from_text(rdtype))]
    message.answer.append(dns.rrset.from_text(owner, 60, "IN", rdtype, address))
    return message


def foreign(query: dns.message.Message) -> list[bytes]:
    """Datagrams that are not an answer to `query`, each for its own reason."""
    other_id = reply(query, "10.0.0.1")
    other_id.id = (query.id + 1) % 65536
    notify = reply(query, "10.0.0.4")
    notify.set_opcode(dns.opcode.NOTIFY)
    return [
        b"",  # empty
        b"\x00\x01\x02",  # shorter than a header
        os.urandom(300),  # noise
        query.to_wire(),  # the query echoed: QR is not set
        other_id.to_wire(),  # another id
        reply(query, "10.0.0.2", name="other.test").to_wire(),  # another name
        reply(query, "2001:db8::6", rdtype="AAAA").to_wire(),  # another type
        notify.to_wire(),  # another opcode
        reply(query, "10.0.0.5").to_wire() + b"junk",  # trailing bytes do not parse
    ]


def settings(**kw: object) -> Settings:
    return Settings(**({"timeout": 1.0, "dns_linger": 0.2} | kw))


async def test_foreign_datagrams_before_the_answer_are_ignored():
    def script(query: dns.message.Message, _addr: tuple) -> list[tuple[float, bytes]]:
        burst = [(0.0, wire) for wire in foreign(query)]
        return [*burst, (0.01, reply(query, "192.0.2.7").to_wire()),
                *burst, (0.05, reply(query, "192.0.2.8").to_wire())]

    async with scripted(script) as url:
        result = await dnsmeasure.measure(DnsQuery("real.test", url), settings())
    assert [r.addresses for r in result.responses] == [("192.0.2.7",), ("192.0.2.8",)]
    assert result.failure is None and result.addresses == ("192.0.2.7",)


async def test_an_ipv6_resolver_is_heard_and_named_as_the_kernel_writes_it():
    """Through dnspython's socket, the probe's (host, port) pair never matched the connected IPv6
    socket's 4-tuple peer: asyncio refused to send (ValueError) and every IPv6 UDP query was an
    unknown_failure before this."""
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this machine")

    def script(query: dns.message.Message, _addr: tuple) -> list[tuple[float, bytes]]:
        return [(0.0, reply(query, "192.0.2.7").to_wire())]

    async with scripted(script, "::1") as url:
        port = url.rsplit(":", 1)[1]
        result = await dnsmeasure.measure(DnsQuery("real.test", f"udp://[0:0::0001]:{port}"), settings())
    assert result.addresses == ("192.0.2.7",) and result.failure is None
    assert result.responses[0].source == f"[::1]:{port}"  # canonical, as from recvfrom


def test_the_acceptance_rule_is_dnspythons():
    """Each datagram is taken or left exactly as dnspython's receive_udp (ignore_errors, query)
    would, read through a real socket pair."""
    query = dns.message.make_query("real.test", "A")
    cases = [*foreign(query), reply(query, "192.0.2.7").to_wire()]
    ours, theirs = [], []
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    right.setblocking(False)  # dnspython waits on a non-blocking socket until the expiration
    with left, right:
        for wire in cases:
            left.send(wire)
            try:
                dns.query.receive_udp(right, None, time.time() + 0.05, ignore_unexpected=True,
                                      ignore_errors=True, query=query)
                theirs.append(True)
            except dns.exception.Timeout:
                theirs.append(False)
            ours.append(answer_to(query, wire) is not None)
    assert ours == theirs == [False] * (len(cases) - 1) + [True]


async def test_an_answer_from_another_port_is_not_heard():
    """Connected: the kernel drops a matching answer from any other address than the resolver's."""
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))

    def script(query: dns.message.Message, addr: tuple) -> list[tuple[float, bytes]]:
        stranger.sendto(reply(query, "10.10.34.35").to_wire(), addr)
        return [(0.02, reply(query, "192.0.2.7").to_wire())]

    with stranger:
        async with scripted(script) as url:
            result = await dnsmeasure.measure(DnsQuery("real.test", url), settings())
    assert [r.addresses for r in result.responses] == [("192.0.2.7",)]


async def test_a_flood_of_answers_is_recorded_up_to_the_cap_and_ends_the_listening():
    def script(query: dns.message.Message, _addr: tuple) -> list[tuple[float, bytes]]:
        return [(0.0, reply(query, f"192.0.2.{i}").to_wire()) for i in range(1, 41)]

    async with scripted(script) as url:
        result = await dnsmeasure.measure(DnsQuery("real.test", url), settings(dns_linger=3.0))
    assert len(result.responses) == dnsmeasure.MAX_RESPONSES
    assert [r.addresses for r in result.responses][:2] == [("192.0.2.1",), ("192.0.2.2",)]
    assert result.elapsed < 2.0  # the cap, not the 3 s linger, ended it


def _icmp_port_unreachable(client: tuple, server: tuple) -> bytes:
    """What a router sends back for client -> server: ICMP 3/3 quoting the IP and UDP headers."""
    inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, socket.IPPROTO_UDP, 0,
                        socket.inet_aton(client[0]), socket.inet_aton(server[0]))
    inner += struct.pack("!HHHH", client[1], server[1], 8, 0)
    body = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:]


async def test_an_icmp_error_ends_the_listening_after_an_answer_and_fails_it_before():
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        pytest.skip("needs CAP_NET_RAW to forge an ICMP port unreachable on loopback")
    server: list[tuple] = []

    def script(query: dns.message.Message, addr: tuple) -> list[tuple[float, bytes]]:
        icmp_at = 0.05 if query.question[0].name.labels[0] == b"after" else 0.0
        icmp = _icmp_port_unreachable(addr, server[0])
        asyncio.get_running_loop().call_later(icmp_at, raw.sendto, icmp, ("127.0.0.1", 0))
        return [(0.02, reply(query, "192.0.2.7").to_wire()), (0.3, reply(query, "192.0.2.8").to_wire())]

    with raw:
        async with scripted(script) as url:
            server.append(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            after = await dnsmeasure.measure(DnsQuery("after.test", url), settings(dns_linger=2.0))
            before = await dnsmeasure.measure(DnsQuery("before.test", url), settings(dns_linger=2.0))
    assert [r.addresses for r in after.responses] == [("192.0.2.7",)]
    assert after.failure is None and after.elapsed < 1.0  # the ICMP, not the 2 s linger, ended it
    assert before.failure == failures.CONNECTION_REFUSED and before.responses == ()


def leak_baseline() -> Callable[[], None]:
    """A function asserting that nothing opened since this call is left: file descriptors,
    registered readers, ResourceWarnings or exceptions reported to the loop."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    fds, readers = len(os.listdir("/proc/self/fd")), len(loop._selector.get_map())  # type: ignore[attr-defined]

    def check() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert len(os.listdir("/proc/self/fd")) == fds
        assert len(loop._selector.get_map()) == readers  # type: ignore[attr-defined]
        assert reported == []

    return check


async def test_cancelled_queries_leave_nothing_behind():
    zone = {"drop.test": Rule("drop"), "inject.test": Rule.inject("10.0.0.1", "192.0.2.7", 5.0)}
    async with DnsServer(zone) as server:  # the server's own sockets close a loop turn late
        leak_check, fds = leak_baseline(), len(os.listdir("/proc/self/fd"))
        silent = [asyncio.create_task(dnsmeasure.measure(DnsQuery("drop.test", server.udp_url),
                                                         settings(timeout=5.0))) for _ in range(10)]
        lingering = [await dnsmeasure.started(DnsQuery("inject.test", server.udp_url),
                                              settings(dns_linger=5.0)) for _ in range(10)]
        assert all(first and first.addresses == ("10.0.0.1",) for _, first in lingering)
        for _ in range(50):  # bounded: until the silent ones have sent
            if server.udp_queries == 20:
                break
            await asyncio.sleep(0.01)
        assert len(os.listdir("/proc/self/fd")) >= fds + 20  # their sockets are open now
        tasks = silent + [task for task, _ in lingering]
        for task in tasks:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(d, asyncio.CancelledError) for d in done)
        leak_check()


async def test_every_outcome_closes_its_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"udp://127.0.0.1:{closed.getsockname()[1]}"
    zone = {"ok.test": Rule.answer("192.0.2.1"), "drop.test": Rule("drop"),
            "inject.test": Rule.inject("10.0.0.1", "192.0.2.7", 0.01)}
    async with DnsServer(zone) as server:
        leak_check = leak_baseline()
        queries = [DnsQuery(name, server.udp_url) for name in zone] + [DnsQuery("ok.test", refused)]
        results = await asyncio.gather(*(dnsmeasure.measure(q, settings(timeout=0.2, dns_linger=0.05))
                                         for q in queries * 5))
        assert {r.failure for r in results} == {None, failures.TIMEOUT, failures.CONNECTION_REFUSED}
        leak_check()


NAMES = ["ok.test", "WWW.Example.ORG.", "bücher.example", "xn--bcher-kva.example",
         "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, "_dmarc.x-y.example", "."]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("qtype", ["A", "AAAA", "CNAME", "TXT", "HTTPS", "ANY"])
def test_query_wire_is_to_wire_byte_for_byte(name, qtype):
    message = dns.message.make_query(name, qtype)
    assert query_wire(message) == message.to_wire()


@given(st.integers(0, 65535), st.sampled_from([0, dns.flags.RD, dns.flags.RD | dns.flags.CD]),
       st.lists(st.text("abz09-_", min_size=1, max_size=20), min_size=1, max_size=5))
def test_query_wire_for_any_id_flags_and_labels(query_id, flags, labels):
    message = dns.message.make_query(".".join(labels), "A", id=query_id, flags=flags)
    assert query_wire(message) == message.to_wire()


def test_other_messages_go_through_the_renderer():
    with_edns = dns.message.make_query("ok.test", "A", use_edns=0, payload=1232)
    with_dnssec = dns.message.make_query("ok.test", "A", want_dnssec=True)
    response = dns.message.make_response(dns.message.make_query("ok.test", "A"))
    response.answer.append(dns.rrset.from_text("ok.test.", 60, "IN", "A", "192.0.2.1"))
    for message in (with_edns, with_dnssec, response):
        assert query_wire(message) == message.to_wire()
