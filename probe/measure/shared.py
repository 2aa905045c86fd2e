"""Connections a run shares where sharing measures nothing: the DoH clients of its control
resolvers and the session to its helper. A new TLS connection per control query once cost a
run more handshakes than its measurements made; these are the probe's own trusted channels,
so reusing them hides nothing. Measurement flows (TCP, TLS, HTTP, throughput to targets) are
never shared: each is a new flow, as a censor sees it.

A run opens a scope with `async with scope():` (probe.runner does); inside it, `doh_session`
and `helper_session` return the run's shared session, outside they return None and the caller
makes a one-off client as before.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from probe.measure.tlsctx import client_context


@dataclass
class _Clients:
    doh: dict[str | None, aiohttp.ClientSession] = field(default_factory=dict)
    helper: dict[str | None, aiohttp.ClientSession] = field(default_factory=dict)

    async def close(self) -> None:
        for session in (*self.doh.values(), *self.helper.values()):
            await session.close()


_CURRENT: contextvars.ContextVar[_Clients | None] = contextvars.ContextVar(
    "probe_shared_clients", default=None
)


@asynccontextmanager
async def scope() -> AsyncIterator[None]:
    """Shared clients for everything measured inside; all closed when the scope ends."""
    clients = _Clients()
    token = _CURRENT.set(clients)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        await clients.close()


def doh_session(ca_file: str | None) -> aiohttp.ClientSession | None:
    """The run's aiohttp session for its DoH servers (keep-alive), or None outside a scope."""
    clients = _CURRENT.get()
    if clients is None:
        return None
    if ca_file not in clients.doh:
        # no pool limit: the run's concurrency bounds the queries in flight
        connector = aiohttp.TCPConnector(ssl=client_context(ca_file), limit=0)
        clients.doh[ca_file] = aiohttp.ClientSession(connector=connector)
    return clients.doh[ca_file]


def helper_session(ca_file: str | None, trace: aiohttp.TraceConfig) -> aiohttp.ClientSession | None:
    """The run's aiohttp session to its helper (keep-alive), or None outside a scope. `trace`
    is installed once; each request passes its own `trace_request_ctx`."""
    clients = _CURRENT.get()
    if clients is None:
        return None
    if ca_file not in clients.helper:
        # no pool limit: the run's concurrency bounds the requests in flight
        connector = aiohttp.TCPConnector(ssl=client_context(ca_file), limit=0)
        clients.helper[ca_file] = aiohttp.ClientSession(connector=connector,
                                                        trace_configs=[trace])
    return clients.helper[ca_file]
