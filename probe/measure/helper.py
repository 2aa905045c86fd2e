"""Ask the helper server (`probe serve`) for its view of a target from outside the censored net.

The helper answers `POST api/v1/control` (wire format: probe.helper_api) with the Evidence it
gathered (DNS from its own resolver, TCP and TLS to every address, an HTTP fetch) plus the
address it saw us from, so the probe can scrub its own public IP from what it stores. An
unreachable, refusing or confused helper is data: `failure` and `operation` are set and
`evidence` is empty.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from probe import failures
from probe.helper_api import API_PATH, MAX_ANSWER, HelperRequest, decode_answer, encode_request
from probe.measure import shared
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.tlsctx import client_context
from probe.model import Evidence, Observation, Settings

HELPER_PATIENCE = 5.0  # the helper runs several operations: wait this many `settings.timeout`s


@dataclass(frozen=True, kw_only=True)
class HelperResult(Observation):
    helper_url: str
    evidence: Evidence = field(default_factory=Evidence)
    client_ip: str | None = None  # our address as the helper saw it
    status: int | None = None  # HTTP status of the helper's answer
    error: str | None = None  # the helper's own explanation of a non-200 answer
    complete: bool = True  # False when the helper hit its deadline and sent partial evidence


def api_url(helper_url: str) -> str:
    """The control endpoint of a helper given as its base URL (or as the endpoint itself)."""
    base = URL(helper_url)
    if base.path.rstrip("/").endswith(API_PATH):
        return str(base)
    return str(base.join(URL(API_PATH)) if base.path.endswith("/") else base / API_PATH)


class Phase:
    """Which operation a failure belongs to, learned from aiohttp's trace hooks (the request's
    `trace_request_ctx`, so that one session can serve many requests)."""

    def __init__(self) -> None:
        self.sent = False

    def operation(self, failure: str) -> str:
        if self.sent:
            return failures.HTTP_ROUND_TRIP
        return failures.TLS_HANDSHAKE if failure.startswith("ssl_") else failures.CONNECT


async def _on_sent(_session: object, ctx: Any, _params: object) -> None:
    if isinstance(ctx.trace_request_ctx, Phase):
        ctx.trace_request_ctx.sent = True


TRACE = aiohttp.TraceConfig()  # marks the request's Phase (its trace_request_ctx) as sent
TRACE.on_request_headers_sent.append(_on_sent)


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` (read no further than that)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error_of(body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):  # not JSON, or not an object: the text is the reason
        message = None
    return str(message)[:200] if message else body[:200].decode("utf-8", "replace")


async def measure(
    request: HelperRequest, settings: Settings, helper_url: str, token: str | None = None
) -> HelperResult:
    """One control measurement from the helper; failures are returned, never raised."""
    t0 = settings.since_origin()
    phase = Phase()
    result = await _exchange(request, settings, helper_url, token, phase)
    elapsed = settings.since_origin() - t0
    return HelperResult(t0=t0, elapsed=elapsed, helper_url=helper_url, **result)


async def _exchange(
    request: HelperRequest, settings: Settings, helper_url: str, token: str | None, phase: Phase
) -> dict:
    headers = {"User-Agent": settings.user_agent}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(
        total=settings.timeout * HELPER_PATIENCE, sock_connect=settings.timeout
    )
    shared_session = shared.helper_session(settings.ca_file, TRACE)
    try:
        async with (
            one_off_session(settings) if shared_session is None else _borrowed(shared_session)
            as session,
            session.post(api_url(helper_url), json=encode_request(request), headers=headers,
                         timeout=timeout, trace_request_ctx=phase) as resp,
        ):
            status = resp.status
            try:
                body = await read_capped(resp, MAX_ANSWER)
            except NETWORK_ERRORS as exc:  # classified, returned as data
                failure, cause = failure_and_cause(exc)
                return {"status": status, "failure": failure, "operation": failures.READ,
                        "cause": cause}
    except NETWORK_ERRORS as exc:  # classified, returned as data
        failure, cause = failure_and_cause(exc)
        return {"failure": failure, "operation": phase.operation(failure), "cause": cause}
    return _interpret(status, body)


def one_off_session(settings: Settings) -> aiohttp.ClientSession:
    """A session for one request (outside a run's shared scope)."""
    connector = aiohttp.TCPConnector(ssl=client_context(settings.ca_file), limit=1)
    return aiohttp.ClientSession(connector=connector, trace_configs=[TRACE])


@contextlib.asynccontextmanager
async def _borrowed(session: aiohttp.ClientSession) -> AsyncIterator[aiohttp.ClientSession]:
    yield session  # the run's shared session: closed by its scope, not here


def _interpret(status: int, body: bytes | None) -> dict:
    invalid = {"status": status, "failure": failures.HTTP_INVALID_RESPONSE,
               "operation": failures.HTTP_ROUND_TRIP}
    if body is None:
        return {**invalid, "error": f"answer larger than {MAX_ANSWER} bytes"}
    if status != 200:
        return {**invalid, "failure": failures.HTTP_REQUEST_FAILED, "error": _error_of(body)}
    parsed = decode_answer(body)
    if parsed is None:
        return {**invalid, "error": "malformed evidence"}
    evidence, client_ip, complete = parsed
    return {"status": status, "evidence": evidence, "client_ip": client_ip, "complete": complete}
