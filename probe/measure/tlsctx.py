"""The one place that builds client TLS contexts: system CAs plus an optional extra PEM, cached.

Every TLS client in the probe (TLS handshakes, HTTP, throughput, DoT/DoH, the helper client)
trusts the same roots, so a lab or helper CA given once with `--ca-file` works everywhere.

Contexts are cached: loading the system CA store costs tens of milliseconds, and a fresh context
per handshake once took three quarters of a large run's CPU. Sharing a context shares no TLS
session: Python resumes a session only when one is passed explicitly (`session=`), which the
probe never does, so every measurement still makes the full handshake a censor sees. A cached
context must never be changed by its user.
"""

from __future__ import annotations

import asyncio.sslproto
import contextlib
import functools
import ssl
from collections.abc import Iterator

DEFAULT_ALPN: tuple[str, ...] = ("h2", "http/1.1")
# asyncio reads at most this much from a TLS socket at once, into a buffer of that size that
# every TLS connection holds (its default 256 KiB, zeroed, so resident: ~45 MB for the ~170 TLS
# connections of a run at concurrency 64). Pages, DNS answers and helper answers need little.
SMALL_TLS_READS = 32 << 10


@functools.lru_cache(maxsize=32)
def client_context(
    ca_file: str | None,
    verify: bool = True,
    alpn: tuple[str, ...] | None = None,
    check_hostname: bool = True,
    sslobject_class: type[ssl.SSLObject] | None = None,
) -> ssl.SSLContext:
    """A shared client context, one per distinct set of arguments.

    `verify=False` completes handshakes with any certificate; `check_hostname=False` verifies
    the chain but not the name (the helper's bulk endpoint answers any SNI with one certificate).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif not check_hostname:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if sslobject_class is not None:
        ctx.sslobject_class = sslobject_class
    return ctx


def small_tls_reads(size: int = SMALL_TLS_READS) -> int:
    """Process-wide: asyncio TLS connections made from now on read `size` bytes at a time;
    returns the previous size. For processes whose TLS connections carry little (the helper;
    a run without throughput flows): a bulk download reads fewer bytes per call with it."""
    previous = asyncio.sslproto.SSLProtocol.max_size
    asyncio.sslproto.SSLProtocol.max_size = size
    return previous


@contextlib.contextmanager
def small_tls_reads_while(small: bool) -> Iterator[None]:
    """`small_tls_reads()` for the block when `small`, the previous size restored after it."""
    previous = small_tls_reads() if small else None
    try:
        yield
    finally:
        if previous is not None:
            small_tls_reads(previous)
