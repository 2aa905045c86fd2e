"""One target's fields, checked: names, URLs (an address or a name, a usable port), categories.
Pure: ValueError (or FieldError naming the field) says what is wrong."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from probe.model import Target

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
_UNUSABLE = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters inside a URL


def parse_domain(text: str) -> str:
    """A lower-case host name (a trailing dot dropped); raises ValueError with the reason."""
    domain = text.strip().lower().removesuffix(".")
    if not domain or len(domain) > 253:
        raise ValueError(f"invalid domain {text!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain {text!r}") from exc
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid domain {text!r}")
    if labels[-1].isdigit():
        raise ValueError(f"invalid domain {text!r} (an address, not a name)")
    return domain


def _url(text: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    return url_and_domain(text, schemes)[0]


def url_and_domain(text: str, schemes: tuple[str, ...] = ("http", "https")) -> tuple[str, str]:
    """A URL the probe can fetch (scheme, a host name or an address, a port in 1-65535, nothing
    unprintable), its host's trailing dot dropped, and that host (the target's domain, an
    address for an IP literal); split once, as a million-row list is checked twice."""
    text = text.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise ValueError(f"URL {text!r}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"URL {text!r} must start with " + " or ".join(f"{s}://" for s in schemes))
    host = parts.hostname
    if not host:
        raise ValueError(f"URL {text!r} has no host")
    if _UNUSABLE.search(text):
        raise ValueError(f"URL {text!r} contains a space or a control character")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"URL {text!r} has an invalid port (want 1-65535)")
    if _address(host):
        return text, _address(host)
    if host.endswith("."):  # a name with its root: the same name, but not as a TLS SNI
        user, at, host_port = parts.netloc.rpartition("@")
        name, colon, port_text = host_port.partition(":")  # a name (not [v6]) has no ":"
        text = parts._replace(netloc=user + at + name[:-1] + colon + port_text).geturl()
    return text, parse_domain(host)


def _address(host: str) -> str | None:
    """The canonical form of an IP literal (no zone: it names a local interface), else None."""
    try:
        return str(ipaddress.ip_address(host)) if "%" not in host else None
    except ValueError:
        return None


def parse_category(text: str) -> str:
    category = text.strip()
    if not _CATEGORY.match(category):
        raise FieldError("category", f"invalid category {category!r} (like GRP or NEWS)")
    return category


_BOOLEANS = {"true": True, "yes": True, "false": False, "no": False}


def parse_flag(text: str) -> bool:
    """A YAML boolean (true/false, yes/no); `media: true` marks a media/CDN host."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not true or false") from None


def make_target(domain: str, url: str | None = None, control: str | None = None,
                source: str = "command line") -> Target:
    """One target from loose values (e.g. `probe check`); ValueError names the bad field."""
    fields = {"domain": domain} | ({"url": url} if url else {}) | (
        {"control": control} if control else {})
    try:
        return build(fields, source)
    except FieldError as exc:
        raise ValueError(f"{exc.key}: {exc.message}") from None


class FieldError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _check(key: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except ValueError as exc:
        raise FieldError(key, str(exc)) from exc


def build(fields: dict[str, str], source: str) -> Target:
    domain = _check("domain", parse_domain, fields["domain"])
    url = _check("url", _url, fields.get("url", f"https://{domain}/"))
    category = parse_category(fields.get("category", "MISC"))
    control = fields.get("control")
    throughput, control_throughput = fields.get("throughput_url"), fields.get(
        "control_throughput_url")
    https_url = lambda u: _url(u, ("https",))  # noqa: E731
    return Target(
        domain=domain,
        url=url,
        category=category,
        control_domain=_check("control", parse_domain, control) if control else None,
        throughput_url=_check("throughput_url", https_url, throughput) if throughput else None,
        control_throughput_url=_check("control_throughput_url", https_url, control_throughput)
        if control_throughput else None,
        media=_check("media", parse_flag, fields["media"]) if "media" in fields else False,
        source=source,
    )
