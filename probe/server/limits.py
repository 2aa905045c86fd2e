"""Which addresses the helper may touch (requests themselves are parsed in probe.helper_api).

A helper on the open internet is a measuring proxy for anyone holding its token, so addresses
that are not globally routable (loopback, private, link-local...) are skipped unless the
operator allows them (the lab does). The check runs twice for an HTTP fetch: on the names a
fetch resolves (PermittedResolver) and on the address each socket is about to connect to
(`Policy.permits` handed to probe.measure.http_connect.ConnectGuard), because a redirect to an
address literal never meets a resolver.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REFUSED = "address not permitted by the helper's policy"


def _plain(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address, an IPv4-mapped or IPv4-compatible IPv6 one judged as the IPv4 it carries
    (::ffff:127.0.0.1 connects to the helper's own loopback)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or _compatible(ip) or ip
    return ip


def _compatible(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """::a.b.c.d (deprecated IPv4-compatible form; some stacks still route it as IPv4)."""
    value = int(ip)
    return ipaddress.IPv4Address(value) if 1 < value < 1 << 32 else None


def permitted(address: str, allow_private: bool, extra: Iterable[Network] = ()) -> bool:
    """Whether the helper may connect to this address: a global one, any but multicast and
    unspecified with `allow_private`, or one inside the `extra` networks the operator named."""
    try:
        ip = _plain(address)
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified:
        return False
    if allow_private or any(ip in net for net in extra if net.version == ip.version):
        return True
    return ip.is_global


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Networks from "10.0.0.0/8"-style text (a bare address is a network of one)."""
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


class PermittedResolver(AbstractResolver):
    """The system's resolver for the names an HTTP fetch meets (redirect targets), minus the
    addresses the helper may not touch: a hostile origin must not redirect the helper into its
    operator's own network."""

    def __init__(self, allow_private: bool, extra: Iterable[Network] = ()) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private
        self._extra = tuple(extra)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if permitted(r["host"], self._allow_private, self._extra)]
        if not allowed:
            raise OSError(errno.EACCES, f"{host} resolves only to addresses the helper may not use")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
