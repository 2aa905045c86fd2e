"""OONI-style failure strings and operation names: constants only, no network library imported.

`FAILURES` is a bounded set, so that a failure can be a metric label; the operation that failed
is recorded beside it, never inside it. Strings follow ooni/spec df-007-errors where OONI has
one. The exception-to-string mapping lives in `probe.measure.classify` (it needs aiohttp and
dnspython); the judging side imports only this module.
"""

from __future__ import annotations

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
# not OONI's: the probe lacks the raw-socket rights (CAP_NET_RAW) that locating a censor needs
RAW_SOCKET_DENIED = "raw_socket_denied"

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
        RAW_SOCKET_DENIED,
    }
)

# Groups the verdict rules and the TLS measurement share.
CERT_FAILURES = frozenset({SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY, SSL_INVALID_CERTIFICATE})
# Failures that still prove a TLS server answered on the path (a certificate it sent, an alert).
PEER_ANSWERED = CERT_FAILURES | {SSL_FAILED_HANDSHAKE}
# How DPI boxes break a connection: reset, silence, or a close after the ClientHello.
INTERFERENCE = frozenset({CONNECTION_RESET, TIMEOUT, EOF, CONNECTION_ABORTED})
# Answers that prove a name does not resolve (a timeout proves nothing).
DNS_NEGATIVE = frozenset({DNS_NXDOMAIN, DNS_NO_ANSWER, DNS_SERVFAIL})
