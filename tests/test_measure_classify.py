"""probe.measure.classify: one row per failure class from real exception objects, real TLS
handshakes and real client errors, then properties over arbitrary exception chains."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import socket
import ssl

import aiohttp
import dns.exception
import dns.resolver
import pytest
import trustme
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given, settings
from hypothesis import strategies as st

from probe import failures
from probe.failures import FAILURES
from probe.measure.classify import NETWORK_ERRORS, cause, classify, failure_and_cause


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    """`outer` as really raised `from cause`, with its traceback and __cause__ set by Python."""
    try:
        raise outer from cause
    except BaseException as exc:  # noqa: BLE001 - we want the raised object itself
        return exc


def _implicit(outer: BaseException, context: BaseException) -> BaseException:
    """`outer` raised while handling `context` (implicit chaining, __context__ only)."""
    try:
        try:
            raise context
        except BaseException:  # noqa: BLE001
            raise outer  # noqa: B904 - implicit chaining is the point
    except BaseException as exc:  # noqa: BLE001
        return exc


_KEY = ConnectionKey("example.org", 443, True, True, None, None, None)

ROWS = [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), failures.CONNECTION_REFUSED),
    (OSError(errno.ECONNREFUSED, "built as OSError"), failures.CONNECTION_REFUSED),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), failures.CONNECTION_RESET),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), failures.CONNECTION_RESET),
    (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), failures.CONNECTION_ABORTED),
    (OSError(errno.EHOSTUNREACH, "No route to host"), failures.HOST_UNREACHABLE),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), failures.NETWORK_UNREACHABLE),
    (TimeoutError(), failures.TIMEOUT),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), failures.TIMEOUT),
    (TimeoutError(), failures.TIMEOUT),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), failures.DNS_NXDOMAIN),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), failures.DNS_MISBEHAVING),
    (_cert_error(62, "Hostname mismatch, certificate is not valid for 'x'."), failures.SSL_INVALID_HOSTNAME),
    (_cert_error(64, "IP address mismatch, certificate is not valid for '192.0.2.1'."), failures.SSL_INVALID_HOSTNAME),
    (_cert_error(20, "unable to get local issuer certificate"), failures.SSL_UNKNOWN_AUTHORITY),
    (_cert_error(18, "self-signed certificate"), failures.SSL_UNKNOWN_AUTHORITY),
    (_cert_error(10, "certificate has expired"), failures.SSL_INVALID_CERTIFICATE),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), failures.EOF),
    (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), failures.EOF),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] alert"), failures.SSL_FAILED_HANDSHAKE),
    (asyncio.IncompleteReadError(b"ab", 5), failures.EOF),
    (dns.resolver.NXDOMAIN(), failures.DNS_NXDOMAIN),
    (dns.resolver.NoAnswer(), failures.DNS_NO_ANSWER),
    (dns.exception.Timeout(timeout=1.0), failures.TIMEOUT),
    (dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]), failures.TIMEOUT),
    (dns.resolver.NoNameservers(), failures.DNS_SERVFAIL),
    (dns.exception.FormError("bad"), failures.DNS_MISBEHAVING),
    (aiohttp.ServerDisconnectedError(), failures.EOF),
    (aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(errno.ECONNREFUSED, "x")), failures.CONNECTION_REFUSED),
    (aiohttp.ClientConnectorError(_KEY, OSError(errno.EHOSTUNREACH, "x")), failures.HOST_UNREACHABLE),
    (aiohttp.ClientConnectorError(_KEY, socket.gaierror(socket.EAI_NONAME, "x")), failures.DNS_NXDOMAIN),
    (aiohttp.ClientConnectorCertificateError(_KEY, _cert_error(20, "x")), failures.SSL_UNKNOWN_AUTHORITY),
    (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), failures.CONNECTION_RESET),
    (aiohttp.ConnectionTimeoutError(), failures.TIMEOUT),
    (aiohttp.ClientPayloadError("Response payload is not completed"), failures.EOF),
    (aiohttp.ClientPayloadError("Response payload is not completed: <ConnectionResetError: 104>"), failures.CONNECTION_RESET),
    (aiohttp.ClientPayloadError("garbled chunk"), failures.HTTP_INVALID_RESPONSE),
    (asyncio.CancelledError(), failures.INTERRUPTED),
    (_chained(RuntimeError("wrapped"), ConnectionResetError(errno.ECONNRESET, "x")), failures.CONNECTION_RESET),
    (_chained(ValueError("DoH"), _chained(RuntimeError("mid"), _cert_error(62, "x"))), failures.SSL_INVALID_HOSTNAME),
    (_chained(OSError("no errno"), ConnectionResetError(errno.ECONNRESET, "x")), failures.CONNECTION_RESET),
    (_implicit(KeyError("while handling"), TimeoutError()), failures.TIMEOUT),
    (_chained(aiohttp.ClientPayloadError("cut"), ConnectionResetError(errno.ECONNRESET, "x")), failures.CONNECTION_RESET),
    (ValueError("nothing network about it"), failures.UNKNOWN),
    (OSError(errno.ENOSPC, "No space left"), failures.UNKNOWN),
]


@pytest.mark.parametrize(("exc", "expected"), ROWS, ids=[f"{type(e).__name__}-{x}" for e, x in ROWS])
def test_classify_rows(exc, expected):
    assert classify(exc) == expected


def test_every_failure_string_is_a_known_member():
    assert {expected for _, expected in ROWS} <= FAILURES


# --- certificate errors from real handshakes (memory BIOs, no sockets) ------------------------


def _handshake_error(leaf: trustme.LeafCert, trusted: trustme.CA, name: str) -> BaseException | None:
    client_ctx = ssl.create_default_context()
    trusted.configure_trust(client_ctx)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_ctx)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # a TLS 1.3 handshake needs 2-3 flights
        try:
            client.do_handshake()
            return None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLError):  # the server side's view does not matter here
            server.do_handshake()
        c_in.write(s_out.read())
    raise AssertionError("handshake neither finished nor failed")


CA = trustme.CA()
_PAST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("leaf", "trusted", "name", "expected"),
    [
        (CA.issue_cert("good.test"), CA, "good.test", None),
        (CA.issue_cert("good.test"), CA, "other.test", failures.SSL_INVALID_HOSTNAME),
        (CA.issue_cert("192.0.2.1"), CA, "192.0.2.2", failures.SSL_INVALID_HOSTNAME),
        (CA.issue_cert("good.test"), trustme.CA(), "good.test", failures.SSL_UNKNOWN_AUTHORITY),
        (
            CA.issue_cert("good.test", not_before=_PAST, not_after=_PAST + datetime.timedelta(days=1)),
            CA,
            "good.test",
            failures.SSL_INVALID_CERTIFICATE,
        ),
    ],
    ids=["ok", "hostname", "ip-address", "unknown-ca", "expired"],
)
def test_real_certificate_errors(leaf, trusted, name, expected):
    exc = _handshake_error(leaf, trusted, name)
    assert (classify(exc) if exc else None) == expected


async def test_real_aiohttp_connector_error_to_a_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://127.0.0.1:{port}/")
    assert classify(caught.value) == failures.CONNECTION_REFUSED


async def test_real_cancellation():
    task = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert classify(caught.value) == failures.INTERRUPTED


# --- properties: classify never raises and stays inside FAILURES -----------------------------


class _HostileStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")


class _HostileOSError(OSError):
    @property
    def errno(self):  # type: ignore[override]
        raise RuntimeError("errno exploded")

    def __str__(self) -> str:
        raise ValueError("no")


class _HostileCert(ssl.SSLCertVerificationError):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _make(kind: type[BaseException], args: tuple) -> BaseException:
    try:
        return kind(*args)
    except Exception:  # noqa: BLE001 - some types reject some argument lists
        return kind()


EXCEPTION_TYPES = [
    Exception, ValueError, RuntimeError, KeyError, OSError, ConnectionRefusedError,
    ConnectionResetError, BrokenPipeError, TimeoutError, asyncio.CancelledError,
    socket.gaierror, ssl.SSLError, ssl.SSLEOFError, ssl.SSLCertVerificationError,
    dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout, dns.exception.DNSException,
    aiohttp.ServerDisconnectedError, aiohttp.ClientError, aiohttp.ClientOSError,
    aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError, EOFError, KeyboardInterrupt,
    _HostileStr, _HostileOSError, _HostileCert,
]  # fmt: skip
_ARGS = st.tuples() | st.tuples(st.integers(-5, 200)) | st.tuples(st.integers(-5, 200), st.text(max_size=20))
_ARGS |= st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.binary(max_size=10)), max_size=3).map(tuple)


@st.composite
def exception_chains(draw: st.DrawFn) -> BaseException:
    """Up to 6 exceptions linked by __cause__/__context__, possibly into cycles."""
    nodes = [
        _make(draw(st.sampled_from(EXCEPTION_TYPES)), draw(_ARGS))
        for _ in range(draw(st.integers(1, 6)))
    ]
    for node in nodes:
        if draw(st.booleans()):
            node.__cause__ = draw(st.sampled_from(nodes))
        if draw(st.booleans()):
            node.__context__ = draw(st.sampled_from(nodes))
        if isinstance(node, ssl.SSLCertVerificationError) and draw(st.booleans()):
            node.verify_code = draw(st.one_of(st.none(), st.integers(-1, 100), st.text(max_size=3)))
    return nodes[0]


@settings(max_examples=400, deadline=None)
@given(exception_chains())
def test_classify_never_raises_and_stays_in_the_set(exc):
    assert classify(exc) in FAILURES


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40))
def test_long_chains_are_bounded(depth):
    exc: BaseException = ValueError("root")
    for _ in range(depth):
        exc = _chained(RuntimeError("wrap"), exc)
    assert classify(exc) == failures.UNKNOWN


def test_a_cycle_terminates():
    a, b = RuntimeError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a) == failures.UNKNOWN


def test_a_cycle_with_a_known_cause_is_still_found():
    a, b = RuntimeError("a"), ConnectionResetError(errno.ECONNRESET, "b")
    a.__cause__, b.__context__ = b, a
    assert classify(a) == failures.CONNECTION_RESET


# --- the cause of an unknown failure, and what is not classified at all ----------------------


def test_an_unknown_failure_keeps_a_short_scrubbed_cause():
    exc = OSError(errno.EADDRNOTAVAIL, "Cannot assign 203.0.113.7 or 2001:db8::1 " + "x" * 400)
    failure, text = failure_and_cause(exc)
    assert failure == failures.UNKNOWN
    assert text.startswith("OSError: [Errno 99] Cannot assign [scrubbed] or [scrubbed] xxx")
    assert len(text) <= 160 and "203.0.113.7" not in text and "2001:db8" not in text


@pytest.mark.parametrize(("text", "kept"), [
    ("connect to ('10.1.2.3', 443) failed", "connect to ('[scrubbed]', 443) failed"),
    ("[Errno 111] Connect call failed ('::1', 41503, 0, 0)",
     "[Errno 111] Connect call failed ('[scrubbed]', 41503, 0, 0)"),
    ("no route to [2001:db8::7]:443 at 12:30:01", "no route to [[scrubbed]]:443 at 12:30:01"),
    ("version 1.2.3 of deadbeef", "version 1.2.3 of deadbeef"),
])
def test_the_cause_scrubs_addresses_and_nothing_else(text, kept):
    assert cause(OSError(text)) == f"OSError: {kept}"


def test_a_known_failure_has_no_cause():
    assert failure_and_cause(ConnectionResetError(errno.ECONNRESET, "reset")) == (
        failures.CONNECTION_RESET, None)


def test_a_hostile_str_still_gives_a_cause():
    class Nasty(OSError):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert cause(Nasty()) == "Nasty"


@pytest.mark.parametrize("bug", [TypeError("x"), KeyError("k"), AttributeError("a"),
                                 ValueError("v"), AssertionError()])
def test_programming_errors_are_not_network_errors(bug):
    assert not isinstance(bug, NETWORK_ERRORS)


async def test_a_programming_error_inside_a_measurement_propagates(monkeypatch):
    """Only network errors become data: a bug in the probe fails loudly, it is not a verdict."""
    from probe.measure import tcp
    from probe.model import Endpoint, Settings

    async def broken(*_args, **_kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(asyncio, "open_connection", broken)
    with pytest.raises(TypeError):
        await tcp.measure(Endpoint("127.0.0.1", 9), Settings(timeout=1))
