"""What the helper accepts: strict parsing of a control request, and which addresses it may touch.

A helper on the open internet is a measuring proxy for anyone holding its token, so requests
are checked field by field (unknown keys refused), and addresses that are not globally routable
(loopback, private, link-local...) are skipped unless the operator allows them (the lab does).
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from probe.measure.control import ControlRequest
from probe.measure.dns import is_ip

MAX_BODY = 16 << 10  # bytes of request JSON
MAX_ADDRESSES_IN = 16  # addresses a request may list; the helper tests at most max_addresses
MAX_URL = 2048
_FIELDS = {"domain", "url", "control_domain", "addresses", "port"}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


class BadRequest(ValueError):
    """A request the helper refuses (HTTP 400); the message says why."""


def valid_host(text: str) -> bool:
    """A DNS name (LDH labels, underscores tolerated) or an IP literal."""
    if is_ip(text):
        return True
    if not 0 < len(text) <= 253:
        return False
    return all(_LABEL.fullmatch(label) for label in text.split("."))


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


def _domain(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None and key == "control_domain":
        return None
    if not isinstance(value, str) or not valid_host(value.lower()):
        raise BadRequest(f"{key}: expected a domain name, got {str(value)[:80]!r}")
    return value.lower()


def _url(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise BadRequest(f"url: expected a string of at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BadRequest(f"url: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest("url: the scheme must be http or https")
    if not parts.hostname or not valid_host(parts.hostname):
        raise BadRequest("url: no valid host")
    return value


def _addresses(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ADDRESSES_IN:
        raise BadRequest(f"addresses: expected a list of at most {MAX_ADDRESSES_IN} IP addresses")
    found: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str) or not is_ip(item) or "%" in item:
            raise BadRequest(f"addresses: {str(item)[:60]!r} is not an IP address")
        found.setdefault(str(ipaddress.ip_address(item)), None)
    return tuple(found)


def _port(value: object) -> int:
    if value is None:
        return 443
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise BadRequest("port: expected an integer 1..65535")
    return value


def parse_request(data: object) -> ControlRequest:
    """A ControlRequest from decoded JSON; raises BadRequest naming the offending field."""
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
    return ControlRequest(
        domain=_domain(data, "domain") or "",
        url=_url(data.get("url")),
        control_domain=_domain(data, "control_domain"),
        addresses=_addresses(data.get("addresses")),
        port=_port(data.get("port")),
    )
