"""The address scrubber against every common spelling of the volunteer's address, and against
neighbours it must leave alone (hypothesis property tests plus a table of spellings)."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.results.scrub import SCRUBBED, scrub

# Global unicast IPv4 (1.0.0.0 .. 223.255.255.255 minus the non-global ranges)
public_v4 = st.integers(1 << 24, (224 << 24) - 1).map(ipaddress.IPv4Address).filter(
    lambda ip: ip.is_global)


def spellings(ip: ipaddress.IPv4Address) -> dict[str, str]:
    a, b, c, d = ip.packed
    value = int(ip)
    return {
        "dotted": str(ip),
        "dashed": f"{a}-{b}-{c}-{d}",
        "zero-padded": f"{a:03d}.{b:03d}.{c:03d}.{d:03d}",
        "partly padded, dashed": f"{a:02d}-{b}-{c:03d}-{d:02d}",
        "integer, zero-padded": f"{value:010d}",
        "ipv4-mapped": f"::ffff:{ip}",
        "ipv4-mapped hex": f"::ffff:{value >> 16:x}:{value & 0xFFFF:x}",
        "ipv4-mapped exploded": ipaddress.IPv6Address(f"::ffff:{ip}").exploded,
        "integer": str(value),
        "hex": f"0x{value:08x}",
        "hex short, upper": f"0X{value:X}",
    }


CONTEXTS = [
    "{}", "ip={}", "({})", "host ip-{}.example.net", "[{}]:443", "from {}.", '"{}"',
    "Cannot connect to {}, refused", "x-forwarded-for: {}\r\n",
]


@settings(max_examples=200, deadline=None)
@given(ip=public_v4, context=st.sampled_from(CONTEXTS))
def test_every_spelling_is_scrubbed(ip: ipaddress.IPv4Address, context: str) -> None:
    for name, form in spellings(ip).items():
        if ":" in form and "example.net" in context:
            continue  # no colon in a host name
        if form.isdigit() and context.startswith("["):
            continue  # looks like a JSON number in a list: kept so the record stays JSON
        text = context.format(form)
        out = scrub(text, [str(ip)])
        assert SCRUBBED in out, (name, text, out)
        assert form not in out, (name, text, out)


@settings(max_examples=200, deadline=None)
@given(ip=public_v4, other=public_v4)
def test_other_addresses_are_left_alone(ip: ipaddress.IPv4Address,
                                        other: ipaddress.IPv4Address) -> None:
    if ip == other:
        return
    for name, form in spellings(other).items():
        text = f"seen {form} here"
        assert scrub(text, [str(ip)]) == text, name


@settings(max_examples=200, deadline=None)
@given(ip=public_v4)
def test_neighbours_in_longer_numbers_are_left_alone(ip: ipaddress.IPv4Address) -> None:
    """The address inside a longer number or address is not the address."""
    a, b, c, d = ip.packed
    text = (f"1{ip} {ip}1 {ip}.7 9.{ip} {a}.{b}.{c} {int(ip)}5 5{int(ip)} "
            f"{a}-{b}-{c}-{d}-9 {ip}/24x")
    out = scrub(text, [str(ip)])
    # only "{ip}/24x" (the address with a prefix length) holds the address itself
    assert out.count(SCRUBBED) == 1, out


@settings(max_examples=100, deadline=None)
@given(v6=st.integers(1, (1 << 128) - 1).map(ipaddress.IPv6Address).filter(
    lambda ip: ip.is_global and ip.ipv4_mapped is None))
def test_ipv6_spellings(v6: ipaddress.IPv6Address) -> None:
    for form in {str(v6), v6.exploded, v6.exploded.upper()}:
        assert scrub(f"at {form}.", [str(v6)]) == f"at {SCRUBBED}."
    neighbour = ipaddress.IPv6Address((int(v6) + 1) % (1 << 128))
    assert scrub(f"at {neighbour}.", [str(v6)]) == f"at {neighbour}."


@settings(max_examples=100, deadline=None)
@given(ip=public_v4, n=st.integers(0, 10**12))
def test_json_stays_json(ip: ipaddress.IPv4Address, n: int) -> None:
    """The store scrubs whole JSON lines: the result must still parse, numbers intact."""
    record = {"n": n, "list": [n, int(ip)], "s": f"from {ip} / {int(ip)}", "ip": str(ip)}
    out = json.loads(scrub(json.dumps(record), [str(ip)]))
    assert out["n"] == n and out["list"] == [n, int(ip)]
    assert str(ip) not in out["s"] and str(int(ip)) not in out["s"]


@pytest.mark.parametrize("given_as", ["1.2.3.4", "::ffff:1.2.3.4", "::FFFF:102:304"])
def test_a_mapped_volunteer_address_is_scrubbed_in_all_spellings(given_as: str, hostile) -> None:
    with hostile.case(f"scrub spellings given {given_as}"):
        for form in spellings(ipaddress.IPv4Address("1.2.3.4")).values():
            assert scrub(f"<{form}>", [given_as]) == f"<{SCRUBBED}>", form


def test_loopback_and_nonsense_are_not_scrubbed() -> None:
    text = "127.0.0.1 2130706433 ::1 0.0.0.0"
    assert scrub(text, ["127.0.0.1", "::1", "0.0.0.0", "nonsense"]) == text


def test_scrub_is_linear_on_a_hostile_text(hostile) -> None:
    import time
    text = ("1" * 30000 + " " + ":" * 30000 + " " + "1.2.3." * 5000 + " " + "0x" * 10000)
    with hostile.case("scrub: hostile text", timeout=1.0):
        start = time.perf_counter()
        scrub(text, ["1.2.3.4", "2001:db8::1"])
        took = time.perf_counter() - start
    print(f"scrub over {len(text)} hostile characters: {took * 1e3:.1f} ms")
    assert took < 1.0
