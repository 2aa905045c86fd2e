"""Hostile peers of central results: collectors that lie, hang or flood the uploader, and a
client that trickles its body to the collector. The uploader stops within its bounds and keeps
every record for the next upload (nothing lost, the cursor not advanced on a lie); the collector
answers 408 and stores nothing. Real sockets on loopback, every wait bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from test_collector import TOKEN, collector, settings, vantage_results

from probe.results.collector_api import PATH
from probe.results.upload import upload

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_collector(handler: Handler) -> AsyncIterator[str]:
    app = web.Application(client_max_size=16 << 20)
    app.router.add_post(f"/{PATH}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def _not_json(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.Response(text="<html>ok</html>")


async def _half(request: web.Request) -> web.StreamResponse:
    lines = (await request.read()).splitlines()
    return web.json_response({"stored": len(lines), "acknowledged": ["0" * 64] * len(lines)})


async def _hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)  # cut by the client's timeout; the runner's cleanup cancels it
    return web.json_response({})


async def _flood(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(64):  # 64 MiB offered; the client reads 1 MiB at most
        await response.write(b"[" * (1 << 20))
    return response


async def _not_a_collector(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.json_response({"error": "bad request"}, status=400)


async def _odd_types(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.json_response({"stored": "all", "acknowledged": 5})


CASES = [  # (name, handler, what the report's failure says, final)
    ("collector answers 200 with HTML", _not_json, "did not acknowledge", True),
    ("collector acknowledges other ids", _half, "did not acknowledge", True),
    ("collector never answers", _hang, "cannot reach the collector: TimeoutError", False),
    ("collector floods its answer", _flood, "did not acknowledge", True),
    ("collector answers odd types", _odd_types, "did not acknowledge", True),
    # a 400 naming no line refuses the request, not a record: nothing may be skipped
    ("a server answering 400 to anything", _not_a_collector, "answered 400: bad request", True),
]


@pytest.mark.parametrize(("name", "handler", "says", "final"), CASES, ids=[c[0] for c in CASES])
async def test_a_hostile_collector_costs_nothing(hostile, tmp_path, name, handler, says,
                                                 final) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with fake_collector(handler) as url:
        with hostile.case(name, timeout=5.0) as case:
            report = await upload(tmp_path / "vantage", settings(url, timeout=0.5, tries=2,
                                                                 deadline=5.0))
            case.lost = len(sent) - report.pending  # every record still waits to be sent
        assert says in (report.failure or "") and report.final is final, report
        assert report.sent == 0 and report.refused == 0 and report.pending == len(sent)


async def test_a_trickled_body_gets_408_and_nothing_is_stored(hostile, tmp_path) -> None:
    record = vantage_results(tmp_path / "vantage")[0]
    line = json.dumps(record).encode() + b"\n"
    async with collector(tmp_path, body_timeout=1.0) as (url, inbox):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with hostile.case("collector body trickled", timeout=3.0):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"POST /{PATH} HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {TOKEN}"
                             f"\r\nContent-Length: {len(line)}\r\n\r\n".encode() + line[:10])
                start, answer = time.monotonic(), b""
                for byte in line[10:60]:  # one byte every 0.1 s: 5 s if never cut
                    writer.write(bytes([byte]))
                    try:
                        answer = await asyncio.wait_for(reader.read(4096), 0.1)
                    except TimeoutError:
                        continue
                    break
                took = time.monotonic() - start
            finally:
                writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and took < 3, (answer[:80], took)
        assert inbox.count() == 0
