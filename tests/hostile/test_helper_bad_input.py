"""Requests the helper cannot read get a 400 with a reason, never a 500 or a logged traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from probe.model import Settings
from probe.server.app import ServerConfig, start

# (case, raw request body); every one is refused before anything is measured
BAD_BODIES = [
    ("deeply nested list", b"[" * 8000 + b"]" * 8000),
    ("deeply nested object", b'{"a":' * 2500 + b"1" + b"}" * 2500),
    ("nested inside a field", b'{"domain": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("5000-digit number", b"1" * 5000),
    ("5000-digit port", b'{"domain": "a.test", "url": "http://a.test/", "port": '
     + b"9" * 5000 + b"}"),
    ("huge exponent port", b'{"domain": "a.test", "url": "http://a.test/", "port": 1e999}'),
    ("NaN port", b'{"domain": "a.test", "url": "http://a.test/", "port": NaN}'),
    ("non-object: list", b"[]"),
    ("non-object: string", b'"x"'),
    ("non-object: null", b"null"),
    ("empty body", b""),
    ("not utf-8", b"\xff\xfe{}"),
    ("utf-16 bom", '{"domain": "a.test"}'.encode("utf-16")),
    ("lone surrogate domain", b'{"domain": "\\ud800", "url": "http://a.test/"}'),
    ("lone surrogate url", b'{"domain": "a.test", "url": "http://\\udfff.test/"}'),
    ("nul in domain", b'{"domain": "a\\u0000.test", "url": "http://a.test/"}'),
    ("duplicate keys, bad last", b'{"domain": "a.test", "domain": 5, "url": "http://a.test/"}'),
    ("truncated", b'{"domain": "a.te'),
    ("trailing garbage", b'{"domain": "a.test", "url": "http://a.test/"} x'),
    ("url with bad port", b'{"domain": "a.test", "url": "http://a.test:99999/"}'),
    ("address list of objects", b'{"domain": "a.test", "url": "http://a.test/", '
     b'"addresses": [{}]}'),
]


@pytest.fixture
async def helper() -> AsyncIterator[int]:
    config = ServerConfig(settings=Settings(timeout=1.0))
    runner, port = await start(config)
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_unreadable_request_is_400(
    helper: int, body: bytes, hostile, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with hostile.case(f"helper bad request: {body[:40]!r}", timeout=5.0) as case:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"http://127.0.0.1:{helper}/api/v1/control", data=body,
                         headers={"Content-Type": "application/json"}) as resp,
        ):
            status, answer = resp.status, await resp.json(content_type=None)
        case.traceback = any(r.exc_info for r in caplog.records)
    assert status == 400 and answer["error"], answer
    assert not case.traceback, [r.getMessage() for r in caplog.records]
