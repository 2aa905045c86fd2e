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
import socket
import ssl
import time
from dataclasses import dataclass

from probe import failures
from probe.measure import blockpages, rawcapture
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


def attempt(trigger: Trigger, ttl: int, limits: Limits = Limits()) -> HopProbe:
    """Opens a connection, sends the trigger with `ttl`, then the follow-up; never raises for a
    network failure (raw sockets not permitted: PermissionError, checked by the caller)."""
    started = time.monotonic()
    capture = rawcapture.Capture(trigger.address, trigger.port, started)
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(limits.timeout)
    result = _Outcome()
    try:
        sock.bind(("0.0.0.0", 0))
        capture.local_port = sock.getsockname()[1]
        if _connect(sock, capture, trigger, limits, result):
            _trigger_and_follow(sender, sock, capture, trigger, ttl, limits, result)
    finally:
        sock.close()
        sender.close()
        capture.close()
    return _probe(trigger, ttl, capture.seen, result, started)


def _connect(sock: socket.socket, capture: rawcapture.Capture, trigger: Trigger,
             limits: Limits, result: _Outcome) -> bool:
    """The kernel's handshake, its SYN-ACK captured (the trigger's sequence numbers)."""
    try:
        sock.connect((trigger.address, trigger.port))
    except NETWORK_ERRORS as exc:
        capture.poll(time.monotonic() + 0.2, lambda seen: seen.reset)  # a refusal's reset
        result.fail(exc, failures.CONNECT)
        return False
    capture.poll(time.monotonic() + limits.timeout, lambda seen: seen.seq)
    if capture.seen.seq is None:  # nothing to align the trigger with
        result.failure, result.operation = failures.UNKNOWN, failures.CONNECT
        result.cause = "the SYN-ACK was not captured"
        return False
    return True


def _trigger_and_follow(sender: socket.socket, sock: socket.socket,
                        capture: rawcapture.Capture, trigger: Trigger, ttl: int, limits: Limits,
                        result: _Outcome) -> None:
    try:
        _send_trigger(sender, sock, capture.seen, trigger, ttl)
    except NETWORK_ERRORS as exc:  # e.g. a local firewall refusing raw packets
        result.fail(exc, failures.TLS_HANDSHAKE if trigger.tls else failures.HTTP_ROUND_TRIP)
        return
    # a reset or data ends the wait; an ICMP from hop `ttl` leaves a moment for a late reset
    capture.poll(time.monotonic() + limits.settle,
                 lambda seen: rawcapture.reacted(seen) or seen.router)
    if not rawcapture.reacted(capture.seen):
        capture.poll(time.monotonic() + min(limits.settle, 0.1))
    if not rawcapture.reacted(capture.seen):  # what the follow-up draws is judged by its outcome
        _follow_up(sock, trigger, limits, result)


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


def _send_trigger(sender: socket.socket, sock: socket.socket, seen: rawcapture.Seen,
                  trigger: Trigger, ttl: int) -> None:
    """The trigger, at the connection's next sequence number, with the given IP TTL."""
    assert seen.seq is not None
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


def _reaction(trigger: Trigger, seen: rawcapture.Seen, result: _Outcome) -> str:
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


def _probe(trigger: Trigger, ttl: int, seen: rawcapture.Seen, result: _Outcome,
           started: float) -> HopProbe:
    packets = tuple(p for p in (seen.syn_ack, seen.reset, seen.data) if p is not None)
    return HopProbe(
        ttl=ttl, name=trigger.name, control=trigger.control, reaction=_reaction(trigger, seen,
        result), router=seen.router, rate_bps=result.rate_bps, packets=packets,
        failure=result.failure, operation=result.operation, cause=result.cause,
        elapsed=time.monotonic() - started)


def syn_ack(address: str, port: int, timeout: float = 2.0) -> PacketFacts | None:
    """The SYN-ACK of a plain connection to `address:port` (a reference for forensics)."""
    capture = rawcapture.Capture(address, port, time.monotonic())
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
