"""The one place that inspects exception types: any exception -> one OONI failure string.

`classify(exc)` always returns a member of `probe.failures.FAILURES`. `NETWORK_ERRORS` are the
exception types a measurement turns into data; anything else (a TypeError, a KeyError) is a bug
in the probe and propagates. `cause(exc)` is the short, address-free text kept beside an
`unknown_failure`, as OONI keeps "unknown_failure: <text>".
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
import ssl

import aiohttp
import dns.exception
import dns.resolver

from probe.failures import (
    CONNECTION_ABORTED,
    CONNECTION_REFUSED,
    CONNECTION_RESET,
    DNS_MISBEHAVING,
    DNS_NO_ANSWER,
    DNS_NXDOMAIN,
    DNS_SERVFAIL,
    EOF,
    HOST_UNREACHABLE,
    HTTP_INVALID_RESPONSE,
    INTERRUPTED,
    NETWORK_UNREACHABLE,
    SSL_FAILED_HANDSHAKE,
    SSL_INVALID_CERTIFICATE,
    SSL_INVALID_HOSTNAME,
    SSL_UNKNOWN_AUTHORITY,
    TIMEOUT,
    UNKNOWN,
)

# What the network (or a hostile peer) can make a measurement raise. UnicodeError: a name or
# header that cannot be encoded; ValueError is left out on purpose (mostly our own bugs).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # sockets, ssl.SSLError, socket.gaierror, TimeoutError, ConnectionError
    EOFError,  # asyncio.IncompleteReadError
    dns.exception.DNSException,
    aiohttp.ClientError,
    UnicodeError,
)
CAUSE_LENGTH = 160
_CANDIDATE = re.compile(r"[0-9A-Fa-f:.]{2,}")  # runs that could be an address, checked below

_ERRNO = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_ABORTED,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: TIMEOUT,
}

# OpenSSL certificate verification codes (X509_V_ERR_*).
_X509_NAME_MISMATCH = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_X509_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}

_GAI_NXDOMAIN = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def _certificate(exc: ssl.SSLCertVerificationError) -> str:
    code = getattr(exc, "verify_code", None)
    if code in _X509_NAME_MISMATCH or "hostname" in str(exc).lower():
        return SSL_INVALID_HOSTNAME
    if code in _X509_UNKNOWN_AUTHORITY:
        return SSL_UNKNOWN_AUTHORITY
    return SSL_INVALID_CERTIFICATE


def _ssl(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate(exc)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or "EOF" in str(exc):
        return EOF
    return SSL_FAILED_HANDSHAKE


def _dns(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DNS_NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return DNS_NO_ANSWER
    if isinstance(exc, dns.exception.Timeout | dns.resolver.LifetimeTimeout):
        return TIMEOUT
    if isinstance(exc, dns.resolver.NoNameservers):
        return DNS_SERVFAIL
    return DNS_MISBEHAVING


def _payload(exc: aiohttp.ClientPayloadError) -> str | None:
    """aiohttp keeps a mid-body reset only in the message text of ClientPayloadError."""
    text = str(exc)
    if "ConnectionResetError" in text or "Connection reset" in text:
        return CONNECTION_RESET
    if "ContentLength" in text or "TransferEncoding" in text or "not complete" in text:
        return EOF
    return None


def _aiohttp(exc: aiohttp.ClientError) -> str | None:
    """aiohttp wraps the real cause; unwrap what it keeps, name what it does not."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _ssl(exc.certificate_error) if isinstance(exc.certificate_error, ssl.SSLError) else SSL_INVALID_CERTIFICATE
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        inner = getattr(exc, "os_error", None)
        return _ssl(inner) if isinstance(inner, ssl.SSLError) else SSL_FAILED_HANDSHAKE
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os(exc.os_error)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return EOF
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _payload(exc)
    if isinstance(exc, aiohttp.ClientResponseError):
        return None  # look at the cause, else it is a broken response
    if isinstance(exc, aiohttp.ClientOSError):
        return _ERRNO.get(exc.errno or -1)  # aiohttp re-raises resets as ClientOSError(*args)
    return None


def _os(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return _ssl(exc)
    if isinstance(exc, socket.gaierror):
        return DNS_NXDOMAIN if exc.errno in _GAI_NXDOMAIN else DNS_MISBEHAVING
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionAbortedError):
        return CONNECTION_ABORTED
    return _ERRNO.get(exc.errno or -1, UNKNOWN)


def _direct(exc: BaseException) -> str | None:
    """The failure an exception names by itself, or None to look at its cause."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return TIMEOUT
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF
    if isinstance(exc, dns.exception.DNSException):
        return _dns(exc)
    if isinstance(exc, aiohttp.ClientError):
        return _aiohttp(exc)
    if isinstance(exc, OSError):
        found = _os(exc)
        return None if found == UNKNOWN else found  # a bare OSError may wrap a known cause
    return None


def classify(exc: BaseException) -> str:
    """The failure string for any exception; never raises, always a member of FAILURES."""
    try:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen and len(seen) < 16:
            seen.add(id(current))
            found = _direct(current)
            if found is not None:
                return found
            current = current.__cause__ or current.__context__
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
            return HTTP_INVALID_RESPONSE
        return UNKNOWN
    except Exception:  # noqa: BLE001 - a hostile __str__ or odd attribute must not break measuring
        return UNKNOWN


def failure_and_cause(exc: BaseException) -> tuple[str, str | None]:
    """The failure string, and for an unknown failure the text that explains it."""
    failure = classify(exc)
    return failure, (cause(exc) if failure == UNKNOWN else None)


def cause(exc: BaseException) -> str:
    """A short description of `exc` for an unknown failure, with every IP address scrubbed."""
    try:
        text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    except Exception:  # noqa: BLE001 - a hostile __str__ still gets a cause
        text = type(exc).__name__
    return _CANDIDATE.sub(_scrub_address, " ".join(text.split()))[:CAUSE_LENGTH]


def _scrub_address(found: re.Match[str]) -> str:
    text = found.group(0)
    try:
        ipaddress.ip_address(text.strip(".:") if text.count(":") < 2 else text)
    except ValueError:
        return text
    return "[scrubbed]"
