"""The helper's wire format, imported by both sides: the client (probe.measure.helper) and the
server (probe.server.app).

`POST api/v1/control` carries a HelperRequest as JSON; the answer is the Evidence the helper
gathered (probe.model, as plain data) plus `client_ip` (the address the helper saw the probe
come from, so the probe can scrub it) and `complete` (False when the helper hit its deadline).
Requests are parsed strictly, field by field, unknown keys refused: a helper on the open
internet is a measuring proxy for anyone holding its token.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from probe.addresses import is_ip
from probe.model import Evidence, from_dict, to_dict

API_PATH = "api/v1/control"
BULK_PATH = "bulk"
MAX_BODY = 16 << 10  # bytes of request JSON
MAX_ANSWER = 4 << 20  # bytes of answer JSON; an Evidence is a few KiB per address
MAX_ADDRESSES_IN = 16  # addresses a request may list; the helper tests at most its own cap
MAX_URL = 2048
_FIELDS = {"domain", "url", "control_domain", "addresses", "port"}
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True)
class HelperRequest:
    domain: str
    url: str
    control_domain: str | None = None  # SNI of a control handshake beside the target's
    addresses: tuple[str, ...] = ()  # what the probe resolved, for the helper to try as well
    port: int = 443


class BadRequest(ValueError):
    """A request the helper refuses (HTTP 400); the message says why."""


def encode_request(request: HelperRequest) -> dict[str, Any]:
    body = asdict(request)
    body["addresses"] = list(request.addresses)
    return body


def encode_answer(evidence: Evidence, client_ip: str | None, complete: bool) -> dict[str, Any]:
    return to_dict(evidence) | {"client_ip": client_ip, "complete": complete}


def decode_answer(body: bytes) -> tuple[Evidence, str | None, bool] | None:
    """Evidence, client_ip and completeness from the helper's JSON; None when malformed."""
    try:
        data = json.loads(body)
        evidence = from_dict(data, Evidence)
    except Exception:  # noqa: BLE001 - json and cattrs raise many types: all mean "malformed"
        return None
    client_ip = data.get("client_ip")
    if client_ip is not None and not isinstance(client_ip, str):
        return None
    return evidence, client_ip, data.get("complete", True) is not False


def valid_host(text: str) -> bool:
    """A DNS name (LDH labels, underscores tolerated) or an IP literal."""
    if is_ip(text):
        return True
    if not 0 < len(text) <= 253:
        return False
    return all(_LABEL.fullmatch(label) for label in text.split("."))


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


def parse_request(data: object) -> HelperRequest:
    """A HelperRequest from decoded JSON; raises BadRequest naming the offending field."""
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
    return HelperRequest(
        domain=_domain(data, "domain") or "",
        url=_url(data.get("url")),
        control_domain=_domain(data, "control_domain"),
        addresses=_addresses(data.get("addresses")),
        port=_port(data.get("port")),
    )
