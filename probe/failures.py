"""OONI-style failure strings, and the one place that inspects exception types.

`classify(exc)` maps any exception to one string of `FAILURES` (a bounded set, so that it can
also be a metric label). The operation that failed is recorded beside it, never inside it.
Strings follow ooni/spec df-007-errors where OONI has one.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import aiohttp
import dns.exception
import dns.resolver

# Operations, as OONI names them.
RESOLVE = "resolve"
CONNECT = "connect"
TLS_HANDSHAKE = "tls_handshake"
HTTP_ROUND_TRIP = "http_round_trip"
READ = "read"

CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
CONNECTION_ABORTED = "connection_aborted"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
TIMEOUT = "generic_timeout_error"
EOF = "eof_error"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_SERVFAIL = "dns_servfail_error"
DNS_REFUSED = "dns_refused_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_BOGON = "dns_bogon_error"
DNS_MISBEHAVING = "dns_server_misbehaving"
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
HTTP_INVALID_RESPONSE = "http_invalid_response"
HTTP_REQUEST_FAILED = "http_request_failed"  # a non-2xx answer where 2xx was required (OONI)
INTERRUPTED = "interrupted"
UNKNOWN = "unknown_failure"

FAILURES = frozenset(
    {
        CONNECTION_REFUSED,
        CONNECTION_RESET,
        CONNECTION_ABORTED,
        HOST_UNREACHABLE,
        NETWORK_UNREACHABLE,
        TIMEOUT,
        EOF,
        DNS_NXDOMAIN,
        DNS_SERVFAIL,
        DNS_REFUSED,
        DNS_NO_ANSWER,
        DNS_BOGON,
        DNS_MISBEHAVING,
        SSL_INVALID_HOSTNAME,
        SSL_UNKNOWN_AUTHORITY,
        SSL_INVALID_CERTIFICATE,
        SSL_FAILED_HANDSHAKE,
        HTTP_INVALID_RESPONSE,
        HTTP_REQUEST_FAILED,
        INTERRUPTED,
        UNKNOWN,
    }
)

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
    except Exception:  # a hostile __str__ or odd attribute must not break measuring
        return UNKNOWN
