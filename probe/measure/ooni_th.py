"""Ask an OONI Web Connectivity test helper (or `probe serve`, which speaks the same protocol)
for the control view of a target; wire shapes and conversions in probe.ooni_th.

The helpers are tried in order, one request each (never a retry storm), until one answers with
a response of the protocol's shape. Each request has a deadline covering connect, wait and read,
and the answer is read up to MAX_TH_ANSWER bytes. A helper that is unreachable, refuses, is
slow, or answers garbage, truncated, oversized or ill-typed JSON is data: `failure` and
`operation` are set and `evidence` is empty (when every helper failed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiohttp

from probe import failures
from probe.helper_api import HelperRequest
from probe.measure.classify import NETWORK_ERRORS, failure_and_cause
from probe.measure.helper import (
    HELPER_PATIENCE,
    HelperResult,
    Phase,
    one_off_session,
    read_capped,
)
from probe.model import Settings
from probe.ooni_th import BadAnswer, encode_request
from probe.ooni_th_answer import decode_response

MAX_TH_ANSWER = 1 << 20  # bytes; an answer lists a few endpoints and a page title
_NO_URL = "none"


def _invalid(status: int | None, error: str) -> dict:
    return {"status": status, "failure": failures.HTTP_INVALID_RESPONSE,
            "operation": failures.HTTP_ROUND_TRIP, "error": error[:200]}


def _interpret(status: int, body: bytes | None, request: HelperRequest, th_url: str) -> dict:
    if body is None:
        return _invalid(status, f"answer larger than {MAX_TH_ANSWER} bytes")
    if status != 200:
        return {**_invalid(status, f"HTTP status {status}"),
                "failure": failures.HTTP_REQUEST_FAILED}
    try:
        evidence = decode_response(json.loads(body), request, th_url)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _invalid(status, "answer is not JSON")
    except (BadAnswer, RecursionError) as exc:  # deep nesting is garbage too
        return _invalid(status, f"answer not of the protocol's shape: {exc}")
    return {"status": status, "evidence": evidence}


async def _ask(request: HelperRequest, settings: Settings, th_url: str) -> dict:
    """One POST to one helper: the HelperResult fields it yields."""
    phase = Phase()
    timeout = aiohttp.ClientTimeout(
        total=settings.timeout * HELPER_PATIENCE, sock_connect=settings.timeout
    )
    body = encode_request(request, settings.user_agent)
    try:
        async with (
            one_off_session(settings) as session,
            session.post(th_url, json=body, headers={"User-Agent": settings.user_agent},
                         allow_redirects=False, timeout=timeout,
                         trace_request_ctx=phase) as resp,
        ):
            status = resp.status
            answer = await read_capped(resp, MAX_TH_ANSWER)
    except NETWORK_ERRORS as exc:  # classified, returned as data
        failure, cause = failure_and_cause(exc)
        return {"failure": failure, "operation": phase.operation(failure), "cause": cause}
    return _interpret(status, answer, request, th_url)


async def measure(
    request: HelperRequest, settings: Settings, th_urls: Sequence[str]
) -> HelperResult:
    """The control view from the first helper that answers; failures returned, never raised."""
    t0 = settings.since_origin()
    tried: list[str] = []
    result: dict = {"failure": failures.UNKNOWN, "cause": "no test helper given"}
    th_url = _NO_URL
    for th_url in th_urls:
        result = await _ask(request, settings, th_url)
        if result.get("failure") is None:
            break
        tried.append(f"{th_url}: {result.get('error') or result['failure']}")
    else:
        if tried:
            result = {**result, "error": "; ".join(tried)[:400]}
    elapsed = settings.since_origin() - t0
    return HelperResult(t0=t0, elapsed=elapsed, helper_url=th_url, **result)
