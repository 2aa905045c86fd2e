"""The one place that builds client TLS contexts: system CAs plus an optional extra PEM.

Every TLS client in the probe (TLS handshakes, HTTP, throughput, the helper client) trusts the
same roots, so a lab or helper CA given once with `--ca-file` works everywhere.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

DEFAULT_ALPN: tuple[str, ...] = ("h2", "http/1.1")


def client_context(
    ca_file: str | None,
    verify: bool = True,
    alpn: Sequence[str] | None = None,
) -> ssl.SSLContext:
    """A fresh client context. `verify=False` completes handshakes with any certificate.

    A fresh context per measurement keeps session tickets from leaking between measurements
    (a resumed session would hide the certificate and skip the full handshake a censor sees).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx
