"""Scrubbing the volunteer's own address out of everything stored, in any common spelling.

OONI's rule (df-000: `probe_ip` is 127.0.0.1) applied to the whole record: the addresses the
helper saw the probe come from, and the machine's own, are replaced by "[scrubbed]" wherever
they appear, however they are written; other addresses are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

SCRUBBED = "[scrubbed]"

# Spellings of an address, each found as a whole token and compared by value, so "1.2.3.4"
# also catches 1-2-3-4 (reverse-DNS names), 001.002.003.004, ::ffff:1.2.3.4, ::ffff:102:304,
# 16909060 and 0x01020304, and never "11.2.3.45" or 2001:db8::10.
# two colons at least: every IPv6 spelling has them, and a lone ":" (each JSON key) is no
# candidate (one per key once made scrubbing most of a large run's CPU)
_V6_TOKEN = re.compile(r"(?<![0-9A-Za-z:.])[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*")
# The others begin with the token's first character and look behind it from there (`\d(?<!
# [0-9]\d)` is "no digit before"): a pattern that starts with a character is searched for that
# character first, one that starts with a look-behind tries every position (3-20x slower).
_V4_TOKEN = re.compile(r"(\d(?<![0-9]\d)(?<![0-9][.-]\d)\d{0,2})([.-])(\d{1,3})\2(\d{1,3})\2"
                       r"(\d{1,3})(?![0-9])(?![.-][0-9])")
_HEX_TOKEN = re.compile(r"0(?<![0-9A-Za-z]0)[xX]([0-9A-Fa-f]{1,8})(?![0-9A-Za-z])")
_INT_TOKEN = re.compile(r"\d(?<![0-9]\d)(?<![0-9]\.\d)\d{7,9}(?![0-9])(?!\.[0-9])")
_JSON_BEFORE = re.compile(r"[:\[,] ?$")  # around a bare JSON number (json.dumps' spacing)
_JSON_AFTER = re.compile(r"[,\]}]")
_MIN_V4 = 1 << 24  # below 1.0.0.0 nothing is anybody's address; small integers stay


def scrub(text: str, addresses: Iterable[str]) -> str:
    """`text` with every given address replaced by "[scrubbed]", in any common spelling
    (whole tokens only, other addresses left alone).

    Loopback and unspecified addresses identify nobody and are left alone. A decimal integer
    that stands as a bare JSON number is kept (scrubbing it would break the record)."""
    v4, v6 = _targets(addresses)
    if not v4 and not v6:
        return text
    text = _V6_TOKEN.sub(lambda m: _scrub_v6(m, v4, v6), text)
    if not v4:
        return text
    text = _V4_TOKEN.sub(lambda m: SCRUBBED if _octets(m) in v4 else m.group(0), text)
    text = _HEX_TOKEN.sub(lambda m: SCRUBBED if int(m.group(1), 16) in v4 else m.group(0), text)
    return _INT_TOKEN.sub(lambda m: _scrub_int(m, v4), text)


def _targets(addresses: Iterable[str]) -> tuple[set[int], set[int]]:
    """The addresses to scrub as integers: IPv4 (IPv4-mapped ones included) and IPv6."""
    v4: set[int] = set()
    v6: set[int] = set()
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        (v4 if ip.version == 4 else v6).add(int(ip))
    return v4, v6


def _scrub_v6(m: re.Match[str], v4: set[int], v6: set[int]) -> str:
    token = m.group(0).rstrip(".")
    try:
        ip = ipaddress.IPv6Address(token)
    except ValueError:
        return m.group(0)
    value = int(ip)
    mapped = int(ip.ipv4_mapped) if ip.ipv4_mapped is not None else value  # or ::a.b.c.d
    if value in v6 or (mapped >= _MIN_V4 and mapped in v4):
        return SCRUBBED + m.group(0)[len(token):]
    return m.group(0)


def _octets(m: re.Match[str]) -> int | None:
    octets = [int(m.group(i)) for i in (1, 3, 4, 5)]
    if any(o > 255 for o in octets):
        return None
    return int.from_bytes(bytes(octets), "big")


def _scrub_int(m: re.Match[str], v4: set[int]) -> str:
    value = int(m.group(0))
    if value < _MIN_V4 or value not in v4:
        return m.group(0)
    if _JSON_BEFORE.search(m.string, max(0, m.start() - 2), m.start()) and \
            _JSON_AFTER.match(m.string, m.end()):
        return m.group(0)
    return SCRUBBED
