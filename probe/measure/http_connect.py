"""Where an HTTP fetch may connect: a name pinned to an address (like curl --resolve), and the
probe's own rule against redirects into its loopback, checked as each socket is made."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

REFUSED = "connection refused by the probe: a redirect into its own loopback"


class ConnectGuard:
    """Checks each address right before its socket connects. The probe's own rule: once the
    first connection went to a non-local address, a redirect into loopback (or the unspecified
    address, which reaches it too) is refused: a hostile target would otherwise be judged
    accessible through a service of the volunteer's own machine. Tests and the lab use
    loopback origins, so a first hop to loopback keeps loopback allowed."""

    def __init__(self, allowed: Callable[[str], bool] | None) -> None:
        self._allowed = allowed
        self._local_first: bool | None = None

    def socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        local = _is_local(address)
        if self._local_first is None:
            self._local_first = local
        if local and not self._local_first:
            raise OSError(errno.EACCES, REFUSED)
        if self._allowed is not None and not self._allowed(address):
            raise OSError(errno.EACCES, "address not permitted by the caller's policy")
        return socket.socket(family=family, type=type_, proto=proto)


def _is_local(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


class PinnedResolver(AbstractResolver):
    """Answers `address` for `host`, like curl --resolve; other names go to `fallback`.

    The URL's host still gives the TLS SNI and the Host header; only the address is pinned.
    """

    def __init__(self, host: str, address: str, fallback: AbstractResolver) -> None:
        self._host = _normal(host)
        self._address = address
        self._fallback = fallback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _normal(host) != self._host:
            return await self._fallback.resolve(host, port, family)
        pinned_family = socket.AF_INET6 if ":" in self._address else socket.AF_INET
        return [
            ResolveResult(
                hostname=host,
                host=self._address,
                port=port,
                family=pinned_family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass  # the fallback belongs to whoever passed it


def _normal(host: str) -> str:
    return host.lower().rstrip(".")
