"""The helper's loop exception handler (probe.server.loop): a client's reset is a debug line, any
other callback error keeps its traceback; and the real `probe serve` leaves no traceback in its
log when clients reset mid-transfer (loopback only)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from probe.server.loop import handle_exception, install, is_reset_race

REPO = Path(__file__).parent.parent


class _Transport:
    """Stands in for a selector transport: only the callback's name matters to the handler."""

    def _call_connection_lost(self, exc: BaseException | None) -> None: ...

    def _read_ready(self) -> None: ...


def _asyncio_attribute_error() -> AttributeError:
    """An AttributeError raised inside asyncio's own code (a torn-down transport)."""
    try:
        asyncio.BaseEventLoop.call_soon(None, print)  # type: ignore[arg-type]
    except AttributeError as exc:
        return exc
    raise AssertionError("expected an AttributeError")


def _our_attribute_error() -> AttributeError:
    try:
        None.close()  # type: ignore[attr-defined]
    except AttributeError as exc:
        return exc
    raise AssertionError("expected an AttributeError")


def _context(loop: asyncio.AbstractEventLoop, callback, exc: BaseException) -> dict:
    """What Handle._run gives the handler when the callback raises."""
    handle = asyncio.Handle(callback, (None,) if callback.__name__.endswith("lost") else (), loop)
    return {"message": f"Exception in callback {handle!r}", "exception": exc, "handle": handle}


@pytest.mark.parametrize(("callback", "exc", "silenced"), [
    ("_call_connection_lost", ConnectionResetError(104, "Connection reset by peer"), True),
    ("_call_connection_lost", BrokenPipeError(32, "Broken pipe"), True),
    ("_call_connection_lost", _asyncio_attribute_error(), True),
    ("_call_connection_lost", _our_attribute_error(), False),  # raised by our code: a bug
    ("_call_connection_lost", RuntimeError("a bug"), False),
    ("_read_ready", ConnectionResetError(104, "Connection reset by peer"), False),
])
async def test_only_the_reset_race_is_silenced(
    caplog: pytest.LogCaptureFixture, callback: str, exc: BaseException, silenced: bool
) -> None:
    loop = asyncio.get_running_loop()
    context = _context(loop, getattr(_Transport(), callback), exc)
    assert is_reset_race(context) is silenced
    with caplog.at_level(logging.DEBUG):
        handle_exception(loop, context)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if silenced:
        assert not errors
        assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    else:  # asyncio's default handler: an error with the traceback
        assert len(errors) == 1 and errors[0].exc_info is not None


async def test_install_sets_the_handler_on_the_running_loop() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    try:
        install()
        assert loop.get_exception_handler() is handle_exception
    finally:
        loop.set_exception_handler(previous)


def _reset_mid_transfer(port: int, ca: trustme.CA, times: int) -> int:
    """`times` clients ask for 4 MiB, read some, and reset (SO_LINGER 0); bytes read in all."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    total = 0
    for _ in range(times):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /bulk?bytes=4194304 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            total += len(tls.recv(65536))
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return total


def test_serve_logs_no_traceback_when_clients_reset(tmp_path: Path) -> None:
    """The real `probe serve` (TLS, loopback): 30 clients reset mid-transfer, then a health
    check still answers; its log holds the listening line and no traceback."""
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe", "serve", "--port", "0", "--cert", str(pem),
             "--key", str(pem)], stderr=sink, cwd=REPO,
            env=os.environ | {"PROBE_HELPER_TOKEN": "", "PYTHONASYNCIODEBUG": ""})
    try:
        port = _wait_port(log, proc)
        assert _reset_mid_transfer(port, ca, times=30) > 0
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                 server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    text = log.read_text()
    assert "listening on https://127.0.0.1:" in text
    assert "Traceback" not in text, text[-3000:]


def _wait_port(log: Path, proc: subprocess.Popen, tries: int = 200) -> int:
    """The port from the 'listening' line; bounded to `tries` x 50 ms."""
    for _ in range(tries):
        for line in log.read_text().splitlines():
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1].strip("/\n"))
        if proc.poll() is not None:
            raise AssertionError(f"probe serve exited: {log.read_text()[-2000:]}")
        subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError("probe serve did not say where it listens")


async def test_bulk_survives_a_client_that_resets_before_the_headers(monkeypatch) -> None:
    """A reset before the answer's headers go out is a normal end of a flow, not a handler
    failure with a traceback (seen under load in bench/helper_load.py)."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from probe.server.bulk import handle_bulk

    async def reset(self, request):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(web.StreamResponse, "prepare", reset)
    response = await handle_bulk(make_mocked_request("GET", "/bulk?bytes=1000"))
    assert response.content_length == 1000


_LEAN_TRANSFER = """
import asyncio, asyncio.sslproto, ssl, sys, trustme
from probe.measure.tlsctx import SMALL_TLS_READS
from probe.server.loop import lean
lean()
ca = trustme.CA()
server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_ctx)
client_ctx = ssl.create_default_context()
ca.configure_trust(client_ctx)
DATA = bytes(range(256)) * 4096  # 1 MiB, read through the small buffer on both sides
async def echo(reader, writer):
    writer.write(await reader.readexactly(len(DATA)))
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="localhost")
    writer.write(DATA)
    got = await asyncio.wait_for(reader.readexactly(len(DATA)), 30)
    writer.close()
    server.close()
    assert got == DATA
    assert asyncio.sslproto.SSLProtocol.max_size == SMALL_TLS_READS == 32 << 10
    print("ok")
asyncio.run(main())
"""


def test_lean_tls_read_buffers_still_carry_every_byte() -> None:
    """`probe serve`'s small TLS read buffers (a process-wide asyncio setting, hence a
    subprocess): 1 MiB each way over loopback TLS arrives whole."""
    done = subprocess.run([sys.executable, "-c", _LEAN_TRANSFER], cwd=REPO, timeout=60,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]


def test_small_tls_reads_while_restores_the_previous_size() -> None:
    import asyncio.sslproto

    from probe.measure.tlsctx import SMALL_TLS_READS, small_tls_reads, small_tls_reads_while

    # start from asyncio's own size: an in-process helper started by an earlier test (`lean`)
    # leaves the small size set for the rest of this process
    outer = small_tls_reads(256 * 1024)
    try:
        before = asyncio.sslproto.SSLProtocol.max_size
        with small_tls_reads_while(False):
            assert asyncio.sslproto.SSLProtocol.max_size == before
        with small_tls_reads_while(True):
            assert asyncio.sslproto.SSLProtocol.max_size == SMALL_TLS_READS != before
        assert asyncio.sslproto.SSLProtocol.max_size == before
    finally:
        small_tls_reads(outer)
