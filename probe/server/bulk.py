"""`GET /bulk?bytes=N`: N random bytes, fast, for throughput flows under any SNI.

The bytes are random so that no middlebox can compress them, generated once at import (not
per request: the server must not be the bottleneck of a 1 Gbit/s measurement) and written in
large slices. N is capped at MAX_BYTES so that the endpoint cannot be used to waste bandwidth.
"""

from __future__ import annotations

import os

from aiohttp import web

MAX_BYTES = 64 << 20
DEFAULT_BYTES = 1 << 20
CHUNK = 1 << 20

_RANDOM = memoryview(os.urandom(CHUNK))


def requested_bytes(query: str | None) -> int:
    """The `bytes` parameter, clamped to 0..MAX_BYTES; DEFAULT_BYTES when absent."""
    if query is None or query == "":
        return DEFAULT_BYTES
    try:
        return max(0, min(MAX_BYTES, int(query)))
    except ValueError as exc:
        raise web.HTTPBadRequest(text="bytes must be an integer\n") from exc


async def handle_bulk(request: web.Request) -> web.StreamResponse:
    """Stream `bytes` random bytes with a Content-Length, in CHUNK-sized writes."""
    total = requested_bytes(request.query.get("bytes"))
    response = web.StreamResponse(
        headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"}
    )
    response.content_length = total
    left = total
    try:  # a client may reset before the headers are out, or at any write: a normal end
        await response.prepare(request)
        while left > 0:
            n = min(left, CHUNK)
            await response.write(_RANDOM[:n])
            left -= n
        await response.write_eof()
    except ConnectionError:
        pass  # the client read what it wanted (or gave up) and closed
    return response
