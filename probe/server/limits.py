"""Which addresses the helper may touch (requests themselves are parsed in probe.helper_api).

A helper on the open internet is a measuring proxy for anyone holding its token, so addresses
that are not globally routable (loopback, private, link-local...) are skipped unless the
operator allows them (the lab does).
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


def permitted(address: str, allow_private: bool) -> bool:
    """Whether the helper may connect to this address."""
    ip = ipaddress.ip_address(address)
    if allow_private:
        return not ip.is_multicast and not ip.is_unspecified
    return ip.is_global and not ip.is_multicast


class PermittedResolver(AbstractResolver):
    """The system's resolver for the names an HTTP fetch meets (redirect targets), minus the
    addresses the helper may not touch: a hostile origin must not redirect the helper into its
    operator's own network."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if permitted(r["host"], self._allow_private)]
        if not allowed:
            raise OSError(errno.EACCES, f"{host} resolves only to addresses the helper may not use")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
