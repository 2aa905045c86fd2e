"""Scrubbing the volunteer's own address out of everything stored, in any common spelling.

OONI's rule (df-000: `probe_ip` is 127.0.0.1) applied to the whole record: the addresses the
helper saw the probe come from, and the machine's own, are replaced by "[scrubbed]" wherever
they appear, however they are written; other addresses are left alone.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

SCRUBBED = "[scrubbed]"

# Spellings of an address, each found as a whole token and compared by value, so "1.2.3.4"
# also catches 1-2-3-4 (reverse-DNS names), 001.002.003.004, ::ffff:1.2.3.4, ::ffff:102:304,
# 16909060 and 0x01020304, and never "11.2.3.45" or 2001:db8::10.
# Every pattern starts with a character, not a look-behind: the regex engine then jumps to the
# positions holding that character (a pattern that starts with a look-behind tries every
# position, 3-20x slower; the text is a whole record, scrubbing it once was most of a run's CPU).
#
# IPv6: a token is a maximal run of [0-9A-Fa-f:.] with two colons at least, not glued to a
# letter. Found from its colons (a lone ":", one per JSON key, is no candidate) and widened.
_V6_COLONS = re.compile(r":[0-9A-Fa-f.]*:")
_V6_TAIL = re.compile(r"[0-9A-Fa-f:.]*")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# Dotted or dashed quads and bare integers: a pattern of the given addresses' own spellings
# (`_v4_spellings`), each branch starting with its first digit, so the engine only stops at
# those digits (a pattern of every quad and integer stopped at every digit and called back on
# every address in the record: half of storing's CPU). Token bounds as for any quad: no digit
# before, no "digit-dot" (quad: "digit-dash" too) before, and after it no digit, no dot-digit.
_QUAD_BEFORE = r"(?<![0-9][\s\S])(?<![0-9][.-][\s\S])"
_QUAD_AFTER = r"(?![0-9])(?![.-][0-9])"
_INT_BEFORE = r"(?<![0-9][\s\S])(?<![0-9]\.[\s\S])"
_INT_AFTER = r"(?![0-9])(?!\.[0-9])"
_HEX_TOKEN = re.compile(r"0(?<![0-9A-Za-z]0)[xX]([0-9A-Fa-f]{1,8})(?![0-9A-Za-z])")
_JSON_BEFORE = re.compile(r"[:\[,] ?$")  # around a bare JSON number (json.dumps' spacing)
_JSON_AFTER = re.compile(r"[,\]}]")
_MIN_V4 = 1 << 24  # below 1.0.0.0 nothing is anybody's address; small integers stay


def scrub(text: str, addresses: Iterable[str]) -> str:
    """`text` with every given address replaced by "[scrubbed]", in any common spelling
    (whole tokens only, other addresses left alone).

    Loopback and unspecified addresses identify nobody and are left alone. A decimal integer
    that stands as a bare JSON number is kept (scrubbing it would break the record)."""
    v4, v6 = _targets(frozenset(addresses))
    if not v4 and not v6:
        return text
    text = _scrub_v6_tokens(text, v4, v6)
    if not v4:
        return text
    if any(hint.search(text) for hint in _v4_hints(v4)):  # mostly none is there
        text = _v4_spellings(v4).sub(_scrub_v4_or_int, text)
    return _HEX_TOKEN.sub(lambda m: SCRUBBED if int(m.group(1), 16) in v4 else m.group(0), text)


@functools.lru_cache(maxsize=16)  # a store scrubs every record with the same few addresses
def _targets(addresses: frozenset[str]) -> tuple[frozenset[int], frozenset[int]]:
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
    return frozenset(v4), frozenset(v6)  # cached: shared, so never changed


def _scrub_v6_tokens(text: str, v4: frozenset[int], v6: frozenset[int]) -> str:
    parts: list[str] = []
    done = 0  # text[:done] is in parts; no token starts before it
    while (m := _V6_COLONS.search(text, done)) is not None:
        start = m.start()
        while start > done and text[start - 1] in _V6_CHARS:
            start -= 1
        end = _V6_TAIL.match(text, m.end()).end()  # type: ignore[union-attr]
        if start and text[start - 1].isascii() and text[start - 1].isalpha():
            parts.append(text[done:end])  # glued to a word: no token
        else:
            parts += [text[done:start], _scrub_v6(text[start:end], v4, v6)]
        done = end
    return "".join(parts) + text[done:] if parts else text


def _scrub_v6(token: str, v4: frozenset[int], v6: frozenset[int]) -> str:
    address = token.rstrip(".")
    if "::" not in address and address.count(":") < 6:
        return token  # no IPv6 address (a clock time, "13:08:01"): cheaper than its ValueError
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return token
    value = int(ip)
    mapped = int(ip.ipv4_mapped) if ip.ipv4_mapped is not None else value  # or ::a.b.c.d
    if value in v6 or (mapped >= _MIN_V4 and mapped in v4):
        return SCRUBBED + token[len(address):]
    return token


@functools.lru_cache(maxsize=16)
def _v4_spellings(v4: frozenset[int]) -> re.Pattern[str]:
    """Every dotted or dashed quad (octets zero-padded to 3 digits at most) and every 8-10 digit
    integer that stands for one of `v4`, as whole tokens."""
    branches = []
    for value in sorted(v4):
        first, *others = (str(o) for o in value.to_bytes(4, "big"))
        for spelling in _zero_padded(first, 3):
            sep = f"s{len(branches)}"  # a name per branch: the same separator thrice
            tail = "".join(f"(?P={sep}){_padded(o)}" for o in others[1:])
            branches.append(f"{spelling[0]}{_QUAD_BEFORE}{spelling[1:]}(?P<{sep}>[.-])"
                            f"{_padded(others[0])}{tail}{_QUAD_AFTER}")
        if value >= _MIN_V4:
            branches += [f"{spelling[0]}{_INT_BEFORE}{spelling[1:]}{_INT_AFTER}"
                         for spelling in _zero_padded(str(value), 10)]
    return re.compile("|".join(branches))


@functools.lru_cache(maxsize=16)
def _v4_hints(v4: frozenset[int]) -> list[re.Pattern[str]]:
    """Quick necessary conditions for `_v4_spellings` to find anything: each spelling holds its
    longest leading octet and what follows it (zeros padded), or its integer's digits. A pattern
    that starts with several fixed digits is searched for as a string (~0.01 ms a record)."""
    hints = []
    for value in sorted(v4):
        octets = [str(o) for o in value.to_bytes(4, "big")]
        start = max(range(3), key=lambda i: len(octets[i]))
        hints.append(octets[start] + "".join(f"[.-]0{{0,2}}{o}" for o in octets[start + 1:]))
        if value >= _MIN_V4:
            hints.append(str(value))
    return [re.compile(hint) for hint in hints]


def _zero_padded(digits: str, width: int) -> list[str]:
    return ["0" * pad + digits for pad in range(width - len(digits) + 1)]


def _padded(octet: str) -> str:
    return f"0{{0,{3 - len(octet)}}}{octet}" if len(octet) < 3 else octet


def _scrub_v4_or_int(m: re.Match[str]) -> str:
    if m.group(0).isdigit() and _JSON_BEFORE.search(m.string, max(0, m.start() - 2), m.start()) \
            and _JSON_AFTER.match(m.string, m.end()):
        return m.group(0)  # a bare JSON number: scrubbing it would break the record
    return SCRUBBED
