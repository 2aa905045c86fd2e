"""TLS handshake measurement: one TCP connection, one ClientHello, everything recorded.

The handshake runs over memory BIOs on top of a plain asyncio stream, so that the connect and
the handshake are timed and classified apart, and so that the certificates the server sent are
kept as evidence even when verification fails (a censor's man-in-the-middle certificate is the
finding, not noise). There is never a retry: censors keep per-flow state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509

from probe import failures
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.tlsctx import DEFAULT_ALPN, client_context
from probe.model import CertSummary, Endpoint, Settings, TlsResult

_MAX_ROUNDS = 256  # reads during one handshake; a real one needs a handful
_READ_SIZE = 1 << 16
_DER = 2  # _ssl.ENCODING_DER
MAX_CHAIN = 6  # certificates kept as DER per handshake: real chains have 2-4, a record stays small
T = TypeVar("T")
After = Callable[[TlsResult, "TlsStream"], Awaitable[T]]


async def measure(endpoint: Endpoint, settings: Settings) -> TlsResult:
    """Connect to endpoint.address:port and do one TLS handshake with SNI endpoint.sni.

    Without an SNI no name can be checked, so the handshake then accepts any certificate and
    `cert_valid_for_name` stays None.
    """
    result, _ = await measure_then(endpoint, settings)
    return result


async def measure_then(
    endpoint: Endpoint, settings: Settings, then: After[T] | None = None
) -> tuple[TlsResult, T | None]:
    """`measure`, and when the handshake succeeded, `then(result, stream)` on the same connection
    before it closes (the HTTP request over the measured connection, as OONI sends it)."""
    start = time.monotonic()
    base: dict[str, Any] = {"t0": settings.since_origin(), "address": endpoint.address,
                            "port": endpoint.port, "sni": endpoint.sni}
    try:
        async with asyncio.timeout(settings.timeout):
            reader, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
    except NETWORK_ERRORS as exc:  # every network failure becomes data
        failure, cause = failure_and_cause(exc)
        return TlsResult(
            **base, elapsed=time.monotonic() - start, failure=failure, operation=failures.CONNECT,
            cause=cause,
        ), None
    base["connect_time"] = time.monotonic() - start
    try:
        tls, incoming, outgoing = _wrap(endpoint.sni, settings)
        failure, cause = await _tls_over(tls, incoming, outgoing, reader, writer, settings)
        result = _result(base, tls, endpoint.sni, failure, cause, time.monotonic() - start)
        if failure is not None or then is None:
            return result, None
        stream = TlsStream(reader, writer, tls, incoming, outgoing, start,
                           start + base["connect_time"], start + result.elapsed)
        return result, await then(result, stream)
    finally:
        await _close(writer)


def _result(base: dict[str, Any], tls: ssl.SSLObject, sni: str | None, failure: str | None,
            cause: str | None, elapsed: float) -> TlsResult:
    """What one handshake showed: the session when it completed, the chain in any case."""
    done = failure is None
    cipher = tls.cipher() if done else None
    chain = _presented_chain(tls, done)
    return TlsResult(
        **base,
        elapsed=elapsed,
        failure=failure,
        operation=None if done else failures.TLS_HANDSHAKE,
        cause=cause,
        tls_version=tls.version() if done else None,
        cipher=cipher[0] if cipher else None,
        alpn=tls.selected_alpn_protocol() if done else None,
        certificates=tuple(_summaries(chain)),
        chain_der=tuple(base64.b64encode(der).decode("ascii") for der in chain[:MAX_CHAIN]),
        cert_valid_for_name=_valid_for_name(sni, failure),
    )


def _wrap(sni: str | None, settings: Settings) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    ctx = client_context(settings.ca_file, verify=sni is not None, alpn=DEFAULT_ALPN)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return ctx.wrap_bio(incoming, outgoing, server_hostname=sni), incoming, outgoing


async def _tls_over(
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    settings: Settings,
) -> tuple[str | None, str | None]:
    """One handshake on an open connection; (failure, cause)."""
    try:
        async with asyncio.timeout(settings.timeout):
            await _handshake(tls, incoming, outgoing, reader, writer)
    except NETWORK_ERRORS as exc:
        return failure_and_cause(exc)
    return None, None


@dataclass
class TlsStream:
    """A connection whose handshake succeeded, for one exchange after it: `send` and `receive`
    application data (callers bound them in time). Monotonic moments of its connect and
    handshake, for the timings of what follows."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO
    started: float
    connected: float
    handshaken: float

    @property
    def alpn(self) -> str | None:
        return self.tls.selected_alpn_protocol()

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await _flush(self.outgoing, self.writer)

    async def receive(self) -> bytes:
        """Decrypted bytes as they come; b"" at the end of the stream (with or without the
        server's close_notify: many servers just close)."""
        for _ in range(_MAX_ROUNDS):  # records that carry no data (tickets, key updates)
            try:
                data = self.tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            else:
                return data
            await _flush(self.outgoing, self.writer)
            await _pull(self.reader, self.incoming)
        raise ssl.SSLError("TLS records without data")


async def _handshake(
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Drive the handshake: flush what OpenSSL wrote, feed what the server sent."""
    for _ in range(_MAX_ROUNDS):
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:  # flow control of the ssl API, not a failure
            pass
        except ssl.SSLError:
            # Best effort: the alert we send tells the server why we hung up.
            with contextlib.suppress(OSError):
                await _flush(outgoing, writer)
            raise
        else:
            await _flush(outgoing, writer)  # TLS 1.3: the client's Finished
            return
        await _flush(outgoing, writer)
        await _pull(reader, incoming)  # at the end, the next do_handshake raises SSLEOFError
    raise ssl.SSLError("TLS handshake did not finish")


async def _pull(reader: asyncio.StreamReader, incoming: ssl.MemoryBIO) -> None:
    """Feed OpenSSL what the server sent next, or the end of the stream."""
    data = await reader.read(_READ_SIZE)
    if data:
        incoming.write(data)
    else:
        incoming.write_eof()


async def _flush(outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter) -> None:
    data = outgoing.read()
    if data and not writer.is_closing():
        writer.write(data)
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(*NETWORK_ERRORS):  # the connection may already be gone
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


def _valid_for_name(sni: str | None, failure: str | None) -> bool | None:
    if sni is None:
        return None
    if failure is None:
        return True
    return False if failure in failures.CERT_FAILURES else None


def _presented_chain(tls: ssl.SSLObject, done: bool) -> list[bytes]:
    """DER certificates as the server sent them, leaf first; empty if none arrived.

    Python >= 3.13 exposes the chain publicly; 3.10-3.12 have the same call on the private
    `_sslobj`, and it still works after a failed verification, when getpeercert() does not.
    """
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    chain = getter() if getter is not None else None
    if chain:
        return [c if isinstance(c, bytes) else c.public_bytes(_DER) for c in chain]
    leaf = tls.getpeercert(binary_form=True) if done else None
    return [leaf] if leaf else []


def _summaries(chain: list[bytes]) -> list[CertSummary]:
    out = []
    for der in chain:
        summary = cert_summary(der)
        if summary is not None:
            out.append(summary)
    return out


@functools.lru_cache(maxsize=256)  # intermediates and CDN certificates repeat across a list
def cert_summary(der: bytes) -> CertSummary | None:
    """Subject, issuer, validity (ISO UTC), SANs and SHA-256 of one DER certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:  # a garbled certificate is kept out, the handshake result stays
        return None
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        san=_sans(cert),
        sha256=hashlib.sha256(der).hexdigest(),
    )


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return ()
    names = ext.value.get_values_for_type(x509.DNSName)
    addresses = [str(a) for a in ext.value.get_values_for_type(x509.IPAddress)]
    return tuple(names + addresses)


def needs_control_sni(handshake: TlsResult) -> bool:
    """Whether a handshake with the control SNI to the same address is worth making: only when
    this target-SNI handshake failed after its connect. The verdict reads the control SNI only
    then (to pin a broken handshake on the name, not the address); a working or unreachable
    address needs no second flow."""
    return handshake.failure is not None and handshake.operation != failures.CONNECT
