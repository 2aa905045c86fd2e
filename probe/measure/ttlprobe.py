"""One TTL-limited attempt (blocking; `locate` runs it in a thread): a TCP connection opened by
the kernel, the trigger injected into it with a small IP TTL, then a harmless follow-up.

Why this way: the kernel owns the connection (its handshake, ACKs and retransmissions are a real
client's), and the trigger is one extra segment written with scapy on a raw socket at the
connection's next sequence number. Setting IP_TTL on the kernel socket instead would make the
kernel retransmit the trigger, and a retransmission sent after the TTL is restored carries the
SNI past the censor at every TTL. The trigger that expires at hop n never reaches the server, so
the follow-up (a ClientHello for the control name, or an HTTP request with the control Host) is
the first data the server sees: it succeeds, unless a censor before hop n saw the trigger and now
drops the flow (silence) or polices it (a slow download, Xue et al. 2021's method). A reset, a
blockpage or an ICMP time-exceeded are read from raw receive sockets (a copy of every TCP and
ICMP packet the host gets), filtered by address and ports before anything is parsed.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from probe import failures
from probe.measure import blockpages
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.model import HopProbe, PacketFacts


@dataclass(frozen=True)
class Trigger:
    address: str
    port: int
    name: str  # the SNI or Host the trigger carries
    follow_name: str  # the control name the follow-up uses (never the target's)
    tls: bool = True
    control: bool = False
    rate_path: str | None = None  # throttle mode: the follow-up downloads this path
    http_path: str = "/"


@dataclass(frozen=True)
class Limits:
    settle: float = 0.5  # seconds to wait for a reset, a blockpage or an ICMP after the trigger
    timeout: float = 2.0  # connect and follow-up handshake
    rate_bytes: int = 96 << 10  # throttle mode: follow-up download budget
    rate_seconds: float = 1.5


def raw_allowed() -> bool:
    """Can this process open raw sockets (root or CAP_NET_RAW)?"""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
    except PermissionError:
        return False
    return True


def client_hello(name: str) -> bytes:
    """The bytes of a real ClientHello for `name`, as Python's TLS client writes it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def http_request(host: str, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode()


@dataclass
class _Seen:
    syn_ack: PacketFacts | None = None
    seq: tuple[int, int] | None = None  # (server's ISN, our next sequence number)
    reset: PacketFacts | None = None
    data: PacketFacts | None = None
    payload: bytearray = field(default_factory=bytearray)
    router: str | None = None


def _reacted(seen: _Seen) -> bool:
    return seen.reset is not None or seen.data is not None


class _Capture:
    """Raw receive sockets for TCP and ICMP; only packets of one connection are parsed."""

    def __init__(self, address: str, port: int, started: float) -> None:
        self.address, self.port, self.started = socket.inet_aton(address), port, started
        self.local_port = 0
        self.seen = _Seen()
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, p)
                      for p in (socket.IPPROTO_TCP, socket.IPPROTO_ICMP)]
        for sock in self.socks:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()

    def poll(self, until: float, done: Callable[[_Seen], object] = _reacted) -> None:
        """Reads packets until `until` (monotonic), or until `done` holds."""
        while True:
            wait = until - time.monotonic()
            readable, _, _ = select.select(self.socks, [], [], max(wait, 0))
            for sock in readable:
                self._drain(sock)
            if done(self.seen) or wait <= 0:
                return

    def _drain(self, sock: socket.socket) -> None:
        for _ in range(10_000):  # bounded: a busy host's packets are not ours to read forever
            try:
                raw = sock.recv(65535)
            except BlockingIOError:
                return
            if sock is self.socks[0]:
                self._tcp(raw)
            else:
                self._icmp(raw)

    def _tcp(self, raw: bytes) -> None:
        ihl = (raw[0] & 0x0F) * 4
        if raw[12:16] != self.address or len(raw) < ihl + 20:
            return
        sport, dport = struct.unpack("!HH", raw[ihl:ihl + 4])
        if sport != self.port or dport != self.local_port:
            return
        from scapy.layers.inet import IP, TCP  # lazily: scapy's import takes a second

        packet = IP(raw)
        tcp = packet[TCP]
        flags, payload = int(tcp.flags), bytes(tcp.payload)
        facts = lambda kind: PacketFacts(  # noqa: E731 - one line per packet kind below
            kind=kind, ttl=packet.ttl, ip_id=packet.id, window=tcp.window,
            t=time.monotonic() - self.started, source=packet.src)
        if flags & 0x12 == 0x12 and self.seen.syn_ack is None:
            self.seen.syn_ack, self.seen.seq = facts("syn_ack"), (tcp.seq, tcp.ack)
        elif flags & 0x04 and self.seen.reset is None:
            self.seen.reset = facts("rst")
        elif payload:
            if self.seen.data is None:
                self.seen.data = facts("data")
            if len(self.seen.payload) < 8192:
                self.seen.payload += payload

    def _icmp(self, raw: bytes) -> None:
        ihl = (raw[0] & 0x0F) * 4
        if len(raw) < ihl + 8 + 20 + 4 or raw[ihl] != 11:  # type 11: time exceeded
            return
        inner = raw[ihl + 8:]
        inner_ihl = (inner[0] & 0x0F) * 4
        if inner[16:20] != self.address or len(inner) < inner_ihl + 4:
            return
        sport, dport = struct.unpack("!HH", inner[inner_ihl:inner_ihl + 4])
        if sport == self.local_port and dport == self.port and self.seen.router is None:
            self.seen.router = socket.inet_ntoa(raw[12:16])


def attempt(trigger: Trigger, ttl: int, limits: Limits = Limits()) -> HopProbe:
    """Opens a connection, sends the trigger with `ttl`, then the follow-up; never raises for a
    network failure (raw sockets not permitted: PermissionError, checked by the caller)."""
    started = time.monotonic()
    capture = _Capture(trigger.address, trigger.port, started)
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(limits.timeout)
    result = _Outcome()
    try:
        sock.bind(("0.0.0.0", 0))
        capture.local_port = sock.getsockname()[1]
        try:
            sock.connect((trigger.address, trigger.port))
        except NETWORK_ERRORS as exc:
            capture.poll(time.monotonic() + 0.2, lambda seen: seen.reset)
            result.fail(exc, failures.CONNECT)
            return _probe(trigger, ttl, capture.seen, result, started)
        capture.poll(time.monotonic() + limits.timeout, lambda seen: seen.seq)
        _send_trigger(sender, sock, capture.seen, trigger, ttl)
        # a reset or data ends the wait; an ICMP from hop `ttl` leaves a moment for a reset
        capture.poll(time.monotonic() + limits.settle, lambda seen: _reacted(seen) or seen.router)
        if not _reacted(capture.seen):
            capture.poll(time.monotonic() + min(limits.settle, 0.1))
        if not _reacted(capture.seen):  # what the follow-up draws is judged by its outcome
            _follow_up(sock, trigger, limits, result)
    finally:
        sock.close()
        sender.close()
        capture.close()
    return _probe(trigger, ttl, capture.seen, result, started)


@dataclass
class _Outcome:
    failure: str | None = None
    operation: str | None = None
    cause: str | None = None
    rate_bps: float | None = None
    followed: bool = False

    def fail(self, exc: BaseException, operation: str) -> None:
        self.failure, self.cause = failure_and_cause(exc)
        self.operation = operation


def _send_trigger(sender: socket.socket, sock: socket.socket, seen: _Seen, trigger: Trigger,
                  ttl: int) -> None:
    """The trigger, at the connection's next sequence number, with the given IP TTL."""
    if seen.seq is None:  # the SYN-ACK was not captured: nothing to align the trigger with
        return
    from scapy.layers.inet import IP, TCP  # lazily

    server_isn, our_next = seen.seq
    payload = client_hello(trigger.name) if trigger.tls else \
        http_request(trigger.name, trigger.http_path)
    local_ip, local_port = sock.getsockname()
    packet = (IP(src=local_ip, dst=trigger.address, ttl=ttl, id=random.getrandbits(16))
              / TCP(sport=local_port, dport=trigger.port, flags="PA", seq=our_next,
                    ack=server_isn + 1, window=64240) / payload)
    sender.sendto(bytes(packet), (trigger.address, 0))


def _follow_up(sock: socket.socket, trigger: Trigger, limits: Limits, result: _Outcome) -> None:
    """The control name over the same connection: silence or a slow download betray a censor
    that saw the trigger; a reset or timeout is recorded as the follow-up's failure."""
    result.followed = True
    operation = failures.TLS_HANDSHAKE if trigger.tls else failures.HTTP_ROUND_TRIP
    try:
        stream: socket.socket = sock
        if trigger.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            stream = context.wrap_socket(sock, server_hostname=trigger.follow_name)
            if trigger.rate_path is None:
                return
            operation = failures.READ
        path = trigger.rate_path or trigger.http_path
        stream.sendall(http_request(trigger.follow_name, path))
        _read(stream, trigger, limits, result)
    except NETWORK_ERRORS as exc:
        result.fail(exc, operation)


def _read(stream: socket.socket, trigger: Trigger, limits: Limits, result: _Outcome) -> None:
    """Reads the answer: its head only, or in throttle mode up to the byte and time budget."""
    received, first, end = 0, None, time.monotonic() + limits.rate_seconds
    while time.monotonic() < end and received < limits.rate_bytes:
        chunk = stream.recv(65536)
        if not chunk:
            break
        first = first or time.monotonic()
        received += len(chunk)
        if trigger.rate_path is None:
            return  # the head is enough to know the flow is alive
    if trigger.rate_path is not None and first is not None and received:
        result.rate_bps = received * 8 / max(time.monotonic() - first, 1e-3)
    elif not received:
        result.failure, result.operation = failures.EOF, failures.READ


def _reaction(trigger: Trigger, seen: _Seen, result: _Outcome) -> str:
    if seen.reset is not None:
        return "reset"
    if seen.data is not None:
        return "blockpage" if _is_blockpage(bytes(seen.payload)) else "server"
    if result.followed and result.failure == failures.TIMEOUT:
        return "silence"
    if result.followed and result.failure == failures.CONNECTION_RESET:
        return "reset"
    return "none"


def _is_blockpage(payload: bytes) -> bool:
    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return False
    status = int(lines[0].split()[1]) if len(lines[0].split()) > 1 and \
        lines[0].split()[1].isdigit() else None
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]
               if ":" in line]
    text = body.decode("utf-8", "replace")
    title = text.split("<title>", 1)[1].split("</title>", 1)[0] if "<title>" in text else None
    return blockpages.match(status, headers, text, title) is not None


def _probe(trigger: Trigger, ttl: int, seen: _Seen, result: _Outcome,
           started: float) -> HopProbe:
    packets = tuple(p for p in (seen.syn_ack, seen.reset, seen.data) if p is not None)
    return HopProbe(
        ttl=ttl, name=trigger.name, control=trigger.control, reaction=_reaction(trigger, seen,
        result), router=seen.router, rate_bps=result.rate_bps, packets=packets,
        failure=result.failure, operation=result.operation, cause=result.cause,
        elapsed=time.monotonic() - started)


def syn_ack(address: str, port: int, timeout: float = 2.0) -> PacketFacts | None:
    """The SYN-ACK of a plain connection to `address:port` (a reference for forensics)."""
    capture = _Capture(address, port, time.monotonic())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind(("0.0.0.0", 0))
        capture.local_port = sock.getsockname()[1]
        sock.connect((address, port))
        capture.poll(time.monotonic() + timeout, lambda seen: seen.syn_ack)
    except NETWORK_ERRORS:
        return None
    finally:
        sock.close()
        capture.close()
    return capture.seen.syn_ack
