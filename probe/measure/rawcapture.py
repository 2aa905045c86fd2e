"""Raw receive sockets for one TCP connection: a copy of every TCP and ICMP packet the host gets,
filtered by address and ports on the raw bytes before anything is parsed (scapy, lazily), so a
busy host costs little. What is kept: the SYN-ACK, the first reset, the first data and its
payload head, and the router that sent ICMP time-exceeded for the connection's packet."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from probe.model import PacketFacts


@dataclass
class Seen:
    syn_ack: PacketFacts | None = None
    seq: tuple[int, int] | None = None  # (server's ISN, our next sequence number)
    reset: PacketFacts | None = None
    data: PacketFacts | None = None
    payload: bytearray = field(default_factory=bytearray)
    router: str | None = None


def reacted(seen: Seen) -> bool:
    return seen.reset is not None or seen.data is not None


class Capture:
    """Raw receive sockets for TCP and ICMP; only packets of one connection are parsed."""

    def __init__(self, address: str, port: int, started: float) -> None:
        self.address, self.port, self.started = socket.inet_aton(address), port, started
        self.local_port = 0
        self.seen = Seen()
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, p)
                      for p in (socket.IPPROTO_TCP, socket.IPPROTO_ICMP)]
        for sock in self.socks:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()

    def poll(self, until: float, done: Callable[[Seen], object] = reacted) -> None:
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
        kind = "syn_ack" if flags & 0x12 == 0x12 else "rst" if flags & 0x04 else "data"
        facts = PacketFacts(kind=kind, ttl=packet.ttl, ip_id=packet.id, window=tcp.window,
                            t=time.monotonic() - self.started, source=packet.src)
        if kind == "syn_ack" and self.seen.syn_ack is None:
            self.seen.syn_ack, self.seen.seq = facts, (tcp.seq, tcp.ack)
        elif kind == "rst" and self.seen.reset is None:
            self.seen.reset = facts
        elif kind == "data" and payload:
            self.seen.data = self.seen.data or facts
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
