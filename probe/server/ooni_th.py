"""`/` of `probe serve`: the OONI Web Connectivity test-helper protocol, so that OONI clients can
use our helper (wire shapes and conversions in probe.ooni_th).

`POST /` with the OONI request JSON answers the OONI response; `GET /` a small health object;
any other method 400, as OONI's helper answers. Bounded like our own control route: the same
token (when configured), concurrency cap, deadline and address policy. The request body is
capped at the server's `max_body` (16 KiB by default, well below the protocol's 16 MiB: a
request is a URL, a few headers and endpoints); a larger one is a 400, as the protocol says.
"""

from __future__ import annotations

from aiohttp import web

from probe.ooni_th import encode_response, parse_request
from probe.server.app import json_error, measure_bounded, read_request, refuse_unauthorized


async def handle_th(request: web.Request) -> web.Response:
    if request.method == "GET":
        return web.json_response({"status": "ok", "protocol": "ooni-web-connectivity-th"})
    if request.method != "POST":
        return json_error(400, f"{request.method} is not supported here")
    refused = refuse_unauthorized(request)
    if refused is not None:
        return refused
    parsed = await read_request(request, parse_request)
    if isinstance(parsed, web.Response):
        return parsed
    measured = await measure_bounded(request, parsed)
    if isinstance(measured, web.Response):
        return measured
    evidence, _complete = measured  # OONI's answer has no such flag: partial results stand
    return web.json_response(encode_response(evidence, parsed))
