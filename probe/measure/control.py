"""Ask the helper server (`probe serve`) for a control measurement taken outside the censored net.

The helper answers `POST api/v1/control` with the Evidence it gathered (DNS from its own
resolver, TCP and TLS to every address, an HTTP fetch) plus the address it saw us from, so the
probe can scrub its own public IP from what it stores. An unreachable, refusing or confused
helper is data: `failure` and `operation` are set and `evidence` is empty.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import asdict, dataclass, field

import aiohttp
from yarl import URL

from probe import failures
from probe.model import Evidence, Observation, Settings, from_dict

API_PATH = "api/v1/control"
MAX_RESPONSE = 4 << 20  # bytes; an Evidence is a few KiB per address
HELPER_PATIENCE = 5.0  # the helper runs several operations: wait this many `settings.timeout`s


@dataclass(frozen=True)
class ControlRequest:
    domain: str
    url: str
    control_domain: str | None = None  # SNI of a control handshake beside the target's
    addresses: tuple[str, ...] = ()  # what the probe resolved, for the helper to try as well
    port: int = 443


@dataclass(frozen=True, kw_only=True)
class ControlResult(Observation):
    helper_url: str
    evidence: Evidence = field(default_factory=Evidence)
    client_ip: str | None = None  # our address as the helper saw it
    status: int | None = None  # HTTP status of the helper's answer
    error: str | None = None  # the helper's own explanation of a non-200 answer
    complete: bool = True  # False when the helper hit its deadline and sent partial evidence


def control_url(helper_url: str) -> str:
    """The control endpoint of a helper given as its base URL (or as the endpoint itself)."""
    base = URL(helper_url)
    if base.path.rstrip("/").endswith(API_PATH):
        return str(base)
    return str(base.join(URL(API_PATH)) if base.path.endswith("/") else base / API_PATH)


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
    return context


def _payload(request: ControlRequest) -> dict:
    body = asdict(request)
    body["addresses"] = list(request.addresses)
    return body


class _Phase:
    """Which operation a failure belongs to, learned from aiohttp's trace hooks."""

    def __init__(self) -> None:
        self.sent = False

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_headers_sent.append(self._on_sent)
        return config

    async def _on_sent(self, *_args: object) -> None:
        self.sent = True

    def operation(self, failure: str) -> str:
        if self.sent:
            return failures.HTTP_ROUND_TRIP
        return failures.TLS_HANDSHAKE if failure.startswith("ssl_") else failures.CONNECT


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or None when it is larger than MAX_RESPONSE."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > MAX_RESPONSE:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> tuple[Evidence, str | None, bool] | None:
    """Evidence, client_ip and completeness from the helper's JSON; None when malformed."""
    try:
        data = json.loads(body)
        evidence = from_dict(data, Evidence)
    except Exception:  # noqa: BLE001 - any malformed answer is one failure: invalid response
        return None
    client_ip = data.get("client_ip")
    if client_ip is not None and not isinstance(client_ip, str):
        return None
    return evidence, client_ip, data.get("complete", True) is not False


def _error_of(body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except Exception:  # noqa: BLE001 - the explanation is a courtesy, not evidence
        message = None
    return str(message)[:200] if message else body[:200].decode("utf-8", "replace")


async def measure(
    request: ControlRequest, settings: Settings, helper_url: str, token: str | None = None
) -> ControlResult:
    """One control measurement from the helper; failures are returned, never raised."""
    t0 = settings.since_origin()
    phase = _Phase()
    result = await _exchange(request, settings, helper_url, token, phase)
    elapsed = settings.since_origin() - t0
    return ControlResult(t0=t0, elapsed=elapsed, helper_url=helper_url, **result)


async def _exchange(
    request: ControlRequest, settings: Settings, helper_url: str, token: str | None, phase: _Phase
) -> dict:
    headers = {"User-Agent": settings.user_agent}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(
        total=settings.timeout * HELPER_PATIENCE, sock_connect=settings.timeout
    )
    connector = aiohttp.TCPConnector(ssl=_ssl_context(settings), limit=1)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=timeout, connector=connector, trace_configs=[phase.trace()]
            ) as session,
            session.post(control_url(helper_url), json=_payload(request), headers=headers) as resp,
        ):
            status = resp.status
            try:
                body = await _read_capped(resp)
            except Exception as exc:  # noqa: BLE001 - classified, returned as data
                return {"status": status, "failure": failures.classify(exc),
                        "operation": failures.READ}
    except Exception as exc:  # noqa: BLE001 - classified, returned as data
        failure = failures.classify(exc)
        return {"failure": failure, "operation": phase.operation(failure)}
    return _interpret(status, body)


def _interpret(status: int, body: bytes | None) -> dict:
    invalid = {"status": status, "failure": failures.HTTP_INVALID_RESPONSE,
               "operation": failures.HTTP_ROUND_TRIP}
    if body is None:
        return {**invalid, "error": f"answer larger than {MAX_RESPONSE} bytes"}
    if status != 200:
        return {**invalid, "failure": failures.HTTP_REQUEST_FAILED, "error": _error_of(body)}
    parsed = _parse(body)
    if parsed is None:
        return {**invalid, "error": "malformed evidence"}
    evidence, client_ip, complete = parsed
    return {"status": status, "evidence": evidence, "client_ip": client_ip, "complete": complete}
