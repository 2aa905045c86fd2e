"""The helper's aiohttp application: control measurements, bulk downloads, health.

Routes: POST /api/v1/control (bearer token when configured), GET /bulk (any SNI, for throughput
A/B tests; see probe.server.bulk), GET /healthz, and `/` for the OONI test-helper protocol
(probe.server.ooni_th), and with a collector POST /api/v1/measurements (probe.server.collector).
Every request is bounded: body size, per operation timeout, a total deadline, and a cap on concurrent control requests (503 when full,
rather than a queue that grows without bound), and slow clients are cut off: a connection owes
a complete request head within `header_timeout` of connecting or of its last answer, and a
request body within `body_timeout` (408). Errors are JSON: {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from probe import jsontext
from probe.helper_api import (
    API_PATH,
    BULK_PATH,
    MAX_BODY,
    BadRequest,
    HelperRequest,
    encode_answer,
    parse_request,
)
from probe.model import Evidence, Settings
from probe.results.collector_api import PATH as COLLECTOR_PATH
from probe.server.bulk import handle_bulk
from probe.server.outside import Policy, measure_outside

if TYPE_CHECKING:
    from probe.server.collector import CollectorConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    settings: Settings = field(default_factory=Settings)  # timeout, ca_file, body_limit
    policy: Policy = field(default_factory=Policy)
    token: str | None = None
    max_concurrency: int = 16
    deadline: float | None = None  # seconds per control request; default 4 x settings.timeout
    max_body: int = MAX_BODY
    header_timeout: float = 10.0  # seconds to send a request head (slowloris)
    body_timeout: float = 10.0  # seconds to send a request body
    collector: CollectorConfig | None = None  # POST /api/v1/measurements (server/collector.py)

    def body_limit(self, path: str) -> int:
        """Bytes a request body to `path` may hold (the collector takes batches)."""
        if self.collector is not None and path == f"/{COLLECTOR_PATH}":
            return self.collector.max_body
        return self.max_body

    def request_deadline(self) -> float:
        return self.deadline if self.deadline is not None else 4 * self.settings.timeout


@dataclass
class _State:
    active: int = 0  # control requests being measured now


@dataclass
class _SlowClients:
    """Deadlines of connections that owe a request head (aiohttp's server has no header
    timeout): set when a connection is first seen and when an answer is done; a connection with
    a request being handled has none (the handlers bound their own work)."""

    timeout: float
    busy: set[web.RequestHandler] = field(default_factory=set)
    due: dict[web.RequestHandler, float] = field(default_factory=dict)

    def enter(self, handler: web.RequestHandler) -> None:
        self.busy.add(handler)

    def leave(self, handler: web.RequestHandler) -> None:
        self.busy.discard(handler)
        self.due[handler] = time.monotonic() + self.timeout

    def sweep(self, connections: list[web.RequestHandler]) -> None:
        """Close the connections past their deadline; forget the closed ones."""
        now = time.monotonic()
        live = set(connections)
        for gone in [h for h in self.due if h not in live]:
            del self.due[gone]
        self.busy &= live
        for handler in connections:
            if handler not in self.busy and now >= self.due.setdefault(handler, now + self.timeout):
                handler.force_close()


CONFIG = web.AppKey("config", ServerConfig)
STATE = web.AppKey("state", _State)
SLOW = web.AppKey("slow_clients", _SlowClients)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413...) as JSON like ours; a bug is a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.status == 400 and exc.text else exc.reason  # 400s say why
        return json_error(exc.status, detail.strip())
    except Exception:  # noqa: BLE001 - a bug in a handler must not kill the connection mutely
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal error")


@web.middleware
async def _bounded_reads(request: web.Request, handler) -> web.StreamResponse:
    """Marks the connection busy while it is served, and reads any request body within
    body_timeout first (read() caches it for the handler)."""
    config, slow, protocol = request.app[CONFIG], request.app[SLOW], request.protocol
    slow.enter(protocol)
    try:
        if request.body_exists:
            limit = config.body_limit(request.path)
            if limit != config.max_body:
                request = request.clone(client_max_size=limit)
            try:
                async with asyncio.timeout(config.body_timeout):
                    await request.read()  # raises 413 past client_max_size
            except TimeoutError:
                return _closing(408, f"request body not received within {config.body_timeout} s")
            except web.HTTPRequestEntityTooLarge:
                status = 400 if request.path == "/" else 413  # OONI's protocol says 400
                return _closing(status, f"request body larger than {limit} bytes")
        return await handler(request)
    finally:
        slow.leave(protocol)


def _closing(status: int, message: str) -> web.Response:
    """An error after which the connection closes: the rest of the body is still unread."""
    response = json_error(status, message)
    response.force_close()
    return response


def _authorized(request: web.Request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    # compare_digest over bytes: the time taken says nothing about how much matched
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


async def read_request(
    request: web.Request, parse: Callable[[object], HelperRequest]
) -> HelperRequest | web.Response:
    """The request parsed by `parse` (ours or the OONI protocol's), or the 400 that says why.
    The body was read by `_bounded_reads` already (size and time), so this only parses it."""
    try:
        return parse(json.loads(await request.read()))
    except BadRequest as exc:  # a field the parser refused: it names the field
        return json_error(400, str(exc))
    except (ValueError, RecursionError):  # not JSON, too deep, a number past int's limit
        return json_error(400, "request body is not JSON the helper can read")


def refuse_unauthorized(request: web.Request) -> web.Response | None:
    """The 401 for a request without the configured bearer token, else None."""
    if _authorized(request, request.app[CONFIG].token):
        return None
    return web.json_response(
        {"error": "missing or wrong bearer token"}, status=401,
        headers={"WWW-Authenticate": 'Bearer realm="probe-helper"'},
    )


async def measure_bounded(
    request: web.Request, parsed: HelperRequest
) -> tuple[Evidence, bool] | web.Response:
    """The control measurement under the concurrency cap and the deadline (shared by our route
    and the OONI protocol's): (evidence, complete), or a 503 when the helper is full."""
    config, state = request.app[CONFIG], request.app[STATE]
    if state.active >= config.max_concurrency:
        return web.json_response(
            {"error": "helper busy, retry later"}, status=503, headers={"Retry-After": "5"}
        )
    state.active += 1
    try:
        # No DNS linger: injected duplicates are what the probe looks for on its own side; the
        # verdict never reads the helper's, and lingering would hold every answer 0.5 s.
        settings = dataclasses.replace(config.settings, origin=time.monotonic(), dns_linger=0.0)
        return await measure_outside(parsed, settings, config.policy, config.request_deadline())
    finally:
        state.active -= 1


async def handle_control(request: web.Request) -> web.Response:
    refused = refuse_unauthorized(request)
    if refused is not None:
        return refused
    parsed = await read_request(request, parse_request)
    if isinstance(parsed, web.Response):
        return parsed
    measured = await measure_bounded(request, parsed)
    if isinstance(measured, web.Response):
        return measured
    evidence, complete = measured
    return web.json_response(encode_answer(evidence, request.remote, complete), dumps=jsontext.dumps)


async def handle_health(request: web.Request) -> web.Response:
    state, config = request.app[STATE], request.app[CONFIG]
    return web.json_response({
        "status": "ok", "active": state.active, "max_concurrency": config.max_concurrency,
        "bulk": True, "collector": config.collector is not None,
    })


def make_app(config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    app = web.Application(
        client_max_size=config.max_body, middlewares=[_json_errors, _bounded_reads]
    )
    app[CONFIG] = config
    app[STATE] = _State()
    app[SLOW] = _SlowClients(config.header_timeout)
    app.router.add_post(f"/{API_PATH}", handle_control)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get(f"/{BULK_PATH}", handle_bulk)
    from probe.server.ooni_th import handle_th  # it uses this module's keys and bounds

    app.router.add_route("*", "/", handle_th)
    if config.collector is not None:
        from probe.server.collector import install  # it uses this module's helpers

        install(app, config.collector)
    return app


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """One certificate for every name: no SNI callback, so an unknown SNI is never refused
    (the SNI-swap test sends the censored name to this server on purpose)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def start(
    config: ServerConfig, host: str = "127.0.0.1", port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve in the running loop; the runner (call .cleanup() to stop) and the bound port."""
    runner = _Runner(make_app(config), shutdown_timeout=1.0, access_log=None,
                     keepalive_timeout=config.header_timeout,
                     lingering_time=min(1.0, config.body_timeout))  # reading an unread body
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner, runner.addresses[0][1]


class _Runner(web.AppRunner):
    """An AppRunner that also closes, about every second, the connections owing a request
    head past their deadline (see _SlowClients)."""

    _sweeper: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        await super().setup()
        self._sweeper = asyncio.create_task(self._sweep())

    async def cleanup(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await super().cleanup()

    async def _sweep(self) -> None:
        slow = self.app[SLOW]
        period = min(1.0, slow.timeout / 4)
        while self.server is not None:  # until cleanup() cancels it
            await asyncio.sleep(period)
            slow.sweep(self.server.connections)
