"""A connected UDP socket read straight from the event loop: each datagram with its arrival time.

What the DNS exchange needs of UDP is small: send one datagram, then hear what comes back until
a deadline. asyncio's datagram transport (and dnspython's socket around it) cost a transport, a
protocol, a queue and a `wait_for` per datagram; here the loop's reader callback reads the socket
into a deque, and the waiting coroutine sleeps on one future and one timer per wait.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from types import TracebackType

MAX_DATAGRAM = 65535  # a UDP payload is never larger

# An arrival: (time.monotonic() when read, the datagram or the error the socket reported).
# asyncio's loop.time() is time.monotonic(): deadlines and arrival times compare directly.
Arrival = tuple[float, bytes | OSError]


class Inbox:
    """A non-blocking UDP socket connected to `peer`, read by the loop as datagrams arrive.

    Connected, so the kernel drops datagrams from any other address and reports an ICMP port
    unreachable as ConnectionRefusedError, in order with the datagrams. Use it in a `with`:
    leaving it (cancellation included) removes the reader and closes the socket."""

    def __init__(self, peer: tuple[str, int], family: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrivals: collections.deque[Arrival] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.connect(peer)  # UDP: no packet is sent, an unroutable peer raises here
            self.peer: tuple[str, int] = self._sock.getpeername()[:2]  # as the kernel writes it
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._reading = True
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop_reading()
        self._sock.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    async def send(self, data: bytes) -> None:
        """One datagram; an error (no route, say) is raised, as asyncio's transport reports it."""
        await self._loop.sock_sendall(self._sock, data)  # sent at once unless the buffer is full

    async def next(self, deadline: float) -> Arrival | None:
        """The next arrival read at or before `deadline` (loop time); None once it has passed."""
        if not self._arrivals and self._loop.time() < deadline:
            self._waiter = self._loop.create_future()
            timer = self._loop.call_at(deadline, _release, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._arrivals and self._arrivals[0][0] <= deadline:
            return self._arrivals.popleft()
        return None

    def _readable(self) -> None:
        """The reader callback: one datagram per call, as asyncio's own transport reads."""
        try:
            arrival: bytes | OSError = self._sock.recv(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # an ICMP error, in its place among the datagrams: it ends the
            arrival = exc       # listening, so reading stops (a lasting error cannot spin)
            self._stop_reading()
        self._arrivals.append((time.monotonic(), arrival))
        if self._waiter is not None:
            _release(self._waiter)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
