"""probe.measure.tcp on loopback, and inside a namespace where iptables drops or rejects SYNs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from probe import failures
from probe.measure import tcp
from probe.model import Endpoint, Settings

ROOT = Path(__file__).resolve().parents[1]


async def test_connect_ok_and_closed_cleanly():
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await seen.put(await reader.read(100))  # b"" on a clean FIN, an error on a RST
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await tcp.measure(Endpoint("127.0.0.1", port), Settings(timeout=1.0))
        assert await asyncio.wait_for(seen.get(), 1.0) == b""
    assert result.failure is None and result.operation is None
    assert (result.address, result.port) == ("127.0.0.1", port)
    assert 0 < result.elapsed < 0.5 and result.t0 >= 0


async def test_closed_port_is_refused():
    with socket.socket() as sock:  # a port just freed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await tcp.measure(Endpoint("127.0.0.1", port), Settings(timeout=1.0))
    assert (result.failure, result.operation) == (failures.CONNECTION_REFUSED, failures.CONNECT)


async def test_reset_right_after_accept_is_reported_at_connect():
    """A listener that completes the handshake and at once RSTs (SO_LINGER 0).

    Observed on Linux: on loopback the RST lands before the event loop reads SO_ERROR for the
    connect, so the connect itself fails with ECONNRESET (50 of 50 runs). Over a real path the
    RST would come later and surface in the next phase (TLS or HTTP) instead.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def reset_one() -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # SO_LINGER 0: close sends RST instead of FIN

    with listener:
        accepting = asyncio.create_task(reset_one())
        result = await tcp.measure(Endpoint("127.0.0.1", port), Settings(timeout=1.0))
        await asyncio.wait_for(accepting, 1.0)
    assert (result.failure, result.operation) == (failures.CONNECTION_RESET, failures.CONNECT)


async def test_unresolvable_name_is_a_failure_not_an_exception():
    result = await tcp.measure(Endpoint("no-such-host.invalid", 80), Settings(timeout=1.0))
    assert result.failure in failures.FAILURES and result.operation == failures.CONNECT


# --- a namespace: one veth pair, 10.123.0.1 on one end, iptables in INPUT ----------------------

NS = f"probeA-tcp-{os.getpid()}"
ADDRESS = "10.123.0.1"
UNREACHABLE = "10.124.0.1"  # an `unreachable` route type
RULES = [  # iptables INPUT rules, after "-p tcp"
    "--dport 81 -j DROP",
    "--dport 82 -j REJECT --reject-with tcp-reset",
    "--dport 83 -j REJECT --reject-with icmp-host-unreachable",
    "--dport 84 -j REJECT --reject-with icmp-net-unreachable",
    "--dport 86 ! --syn -j REJECT --reject-with tcp-reset",  # RST after the handshake
]
LISTENING = 86  # a listener runs here, so the handshake completes before the RST


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def namespace():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("needs root (CAP_NET_ADMIN), iproute2 and iptables for a network namespace")
    try:
        _ip("netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns does not work here: {exc.stderr.decode().strip()}")
    try:
        _ip("-n", NS, "link", "set", "lo", "up")
        _ip("-n", NS, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", NS, "addr", "add", f"{ADDRESS}/24", "dev", "v0")
        _ip("-n", NS, "link", "set", "v0", "up")
        _ip("-n", NS, "link", "set", "v1", "up")
        _ip("-n", NS, "route", "add", "unreachable", "10.124.0.0/24")
        for rule in RULES:
            _ip("netns", "exec", NS, "iptables", "-A", "INPUT", "-p", "tcp", *rule.split())
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)


def _measure_in(ns: str, address: str, port: int, timeout: float, listen: bool) -> dict:
    """Run tcp.measure in a process inside `ns`; its sockets live in that namespace."""
    code = (
        "import asyncio, json, sys\n"
        "from probe.measure.tcp import measure\n"
        "import socket\n"
        "from probe.model import Endpoint, Settings, to_dict\n"
        "listener = socket.create_server((sys.argv[1], int(sys.argv[2]))) if sys.argv[4] == '1' else None\n"
        "r = asyncio.run(measure(Endpoint(sys.argv[1], int(sys.argv[2])), Settings(timeout=float(sys.argv[3]))))\n"
        "print(json.dumps(to_dict(r)))\n"
    )
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", code, address, str(port), str(timeout)]
    argv.append("1" if listen else "0")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, check=True)
    return json.loads(done.stdout)


@pytest.mark.lab
@pytest.mark.parametrize(
    ("address", "port", "failure", "why"),
    [
        (ADDRESS, 81, failures.TIMEOUT, "SYN dropped: silence until our timeout"),
        # A RST in answer to a SYN is what a closed port sends: Linux reports ECONNREFUSED, so a
        # censor's RST at connect time is indistinguishable from a refusal at this layer.
        (ADDRESS, 82, failures.CONNECTION_REFUSED, "SYN answered by an injected RST"),
        (ADDRESS, 83, failures.HOST_UNREACHABLE, "ICMP host unreachable"),
        (ADDRESS, 84, failures.NETWORK_UNREACHABLE, "ICMP network unreachable"),
        (UNREACHABLE, 80, failures.HOST_UNREACHABLE, "route of type unreachable"),
        (ADDRESS, 85, failures.CONNECTION_REFUSED, "no rule, nothing listening"),
        # Handshake done, then a RST (the TSPU's RST/ACK): on a local path it lands before
        # connect() returns, so it is seen at connect; see the loopback test above.
        (ADDRESS, LISTENING, failures.CONNECTION_RESET, "RST right after the handshake"),
    ],
)
def test_censored_connects(namespace, address, port, failure, why):
    result = _measure_in(namespace, address, port, timeout=1.0, listen=port == LISTENING)
    assert (result["failure"], result["operation"]) == (failure, failures.CONNECT), why
    if failure == failures.TIMEOUT:
        assert 0.9 < result["elapsed"] < 2.0
    else:
        assert result["elapsed"] < 0.5
