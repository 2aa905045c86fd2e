"""The helper's event loop: a client that resets is a normal event, and a connection's TLS read
buffer is small.

CPython 3.11's selector transports can report a connection reset by the peer as an unhandled
"Exception in callback ..._call_connection_lost(...)" with a traceback (a race between the
reset and the SSL transport's own close; the bulk endpoint's capped flows trigger it under
load). Those, and only those, become one debug line; everything else goes to asyncio's default
handler, so a real bug in a callback still logs its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from pathlib import Path
from typing import Any

from probe.measure.tlsctx import small_tls_reads

log = logging.getLogger(__name__)

_ASYNCIO = Path(asyncio.__file__).parent


def _raised_in_asyncio(exc: BaseException) -> bool:
    """The innermost frame of the traceback is asyncio's own code (not ours, not aiohttp's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).parent == _ASYNCIO


def is_reset_race(context: dict[str, Any]) -> bool:
    """A peer's reset surfacing from a transport's `_call_connection_lost` callback."""
    exc = context.get("exception")
    handle = context.get("handle")
    where = f"{context.get('message', '')} {handle!r}"
    if exc is None or handle is None or "._call_connection_lost(" not in where:
        return False
    if isinstance(exc, ConnectionError):
        return True
    # the same race seen one step later: the transport was already torn down (socket None)
    return isinstance(exc, AttributeError) and _raised_in_asyncio(exc)


def handle_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if is_reset_race(context):
        log.debug("client connection reset: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


def install(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Use handle_exception in `loop` (default: the running loop)."""
    (loop or asyncio.get_running_loop()).set_exception_handler(handle_exception)


def lean() -> None:
    """For the helper process only: small TLS read buffers in every connection it accepts or
    makes (a class attribute asyncio reads when a connection is made). They were 68 MB of
    256 KiB buffers for ~500 connections under load; what it sends (bulk flows) does not go
    through them."""
    small_tls_reads()

