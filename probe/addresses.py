"""Pure questions about IP address literals, shared by measuring, judging and the helper."""

from __future__ import annotations

import ipaddress


def is_ip(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_bogon(address: str) -> bool:
    """A private, reserved, loopback, link-local, unspecified or multicast address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return (ip.is_private or ip.is_reserved or ip.is_loopback or ip.is_link_local
            or ip.is_unspecified or ip.is_multicast)


def host_port(host: str, port: int) -> str:
    """ "HOST:PORT", an IPv6 address in brackets (as Go's net.JoinHostPort and URLs write it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
