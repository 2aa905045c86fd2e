"""Prometheus remote write 1.0: the registry's samples, stamped and pushed to a receiver that
speaks it (Prometheus with --web.enable-remote-write-receiver, Thanos, Mimir, VictoriaMetrics).

This module is the wire: one `WriteRequest` (protobuf, generated from prompb/remote.proto)
compressed with snappy's block format (cramjam), POSTed with the three headers of the protocol,
and the receiver's answer sorted into sent (2xx), rejected (any other 4xx, or a redirect: never
retried) and retry (429, 5xx, no answer). The queue and the retries are in remote_queue.py.
"""

from __future__ import annotations

import asyncio
import base64
import math
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

# protobuf's runtime costs ~5 MB, snappy and the client library ~20 ms of every run's start:
# loaded by the first push, not by `probe run` (which imports this module for its options)
if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

    from probe.monitoring.prompb.remote_pb2 import WriteRequest

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
# What can go wrong between us and the receiver: worth a retry, never a crash.
SEND_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError, TimeoutError)
RETRY_AFTER_CAP = 300.0  # seconds: a receiver asking for more is asked again sooner
DETAIL_LENGTH = 200  # characters of a receiver's message kept for the log


@dataclass(frozen=True)
class RemoteWriteConfig:
    """Where and how to push; `interval`, the backoff and the queue matter to the daemon only."""

    url: str
    token: str | None = None  # bearer token
    user: str | None = None  # basic auth, with password
    password: str | None = None
    ca_file: str | None = None  # trust only this CA for an https URL
    interval: float = 60.0  # seconds between two collections of the registry
    timeout: float = 30.0  # per request
    min_backoff: float = 0.5  # seconds before the first retry, doubled each time ...
    max_backoff: float = 5.0  # ... up to this (Prometheus' own remote write uses the same cap)
    queue_bytes: int = 32 << 20  # compressed requests kept while the receiver is away

    def __post_init__(self) -> None:
        if self.token and self.user:
            raise ValueError("a bearer token or a user and password, not both")
        if bool(self.user) != bool(self.password):
            raise ValueError("basic auth needs both a user and a password")

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `failures` failed attempts in a row (>= 1)."""
        wait = min(self.min_backoff * 2 ** min(failures - 1, 30), self.max_backoff)
        if retry_after is not None:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
        return wait


@dataclass(frozen=True)
class Batch:
    """One encoded request: every sample of one collection, all at the same timestamp."""

    body: bytes  # snappy-compressed WriteRequest
    samples: int
    timestamp_ms: int
    raw_bytes: int  # before compression (capacity figures)


@dataclass(frozen=True)
class Answer:
    outcome: str  # "sent", "rejected" (dropped, never retried) or "retry"
    status: int | None = None  # None: no HTTP answer at all
    detail: str = ""  # the receiver's message or the network error, one short line
    retry_after: float | None = None


# --- encoding --------------------------------------------------------------------------------


def families_of(collectors: Iterable[Collector]) -> list[Metric]:
    """Every family the collectors give now: cheap, and a consistent view to encode later."""
    return [family for collector in collectors for family in collector.collect()]


def series_of(families: Iterable[Metric]) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    """(sorted labels with __name__, value) of every sample."""
    out = []
    for family in families:
        for s in family.samples:
            if s.value is None or math.isnan(s.value):
                continue  # nothing to say (a NaN would read as a staleness marker)
            labels = tuple(sorted({**s.labels, "__name__": s.name}.items()))
            out.append((labels, float(s.value)))
    return out


def encode(families: Iterable[Metric], timestamp_ms: int) -> Batch:
    """One WriteRequest of every sample at `timestamp_ms`, snappy-compressed. Pure CPU (about
    0.3 s for 1,000 targets): the daemon runs it in a thread."""
    import cramjam

    from probe.monitoring.prompb.remote_pb2 import WriteRequest

    request = WriteRequest()
    series = series_of(families)
    for labels, value in series:
        ts = request.timeseries.add()
        for name, label_value in labels:
            ts.labels.add(name=name, value=label_value)
        ts.samples.add(value=value, timestamp=timestamp_ms)
    raw = request.SerializeToString()
    return Batch(bytes(cramjam.snappy.compress_raw(raw)), len(series), timestamp_ms, len(raw))


def decode(body: bytes) -> WriteRequest:
    """The inverse of `encode` (tests, and anyone checking what a receiver got)."""
    import cramjam

    from probe.monitoring.prompb.remote_pb2 import WriteRequest

    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return request


def now_ms() -> int:
    return int(time.time() * 1000)


# --- sending ---------------------------------------------------------------------------------


def open_session(config: RemoteWriteConfig) -> aiohttp.ClientSession:
    headers = dict(HEADERS)
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    elif config.user and config.password:  # RFC 7617
        pair = f"{config.user}:{config.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    tls = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else None
    return aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(ssl=tls or True, limit=1),
        timeout=aiohttp.ClientTimeout(total=config.timeout))


async def send(session: aiohttp.ClientSession, url: str, body: bytes) -> Answer:
    """One POST; every way it can end is an Answer, a programming error raises."""
    try:
        async with session.post(url, data=body, allow_redirects=False) as response:
            text = (await response.content.read(4096)).decode("utf-8", "replace")
            return classify(response.status, text, response.headers.get("Retry-After"))
    except SEND_ERRORS as exc:
        return Answer("retry", None, _one_line(f"{type(exc).__name__}: {exc}"))


def classify(status: int, text: str = "", retry_after: str | None = None) -> Answer:
    detail = _one_line(text)
    if 200 <= status < 300:
        return Answer("sent", status, detail)
    if status == 429 or status >= 500:
        return Answer("retry", status, detail, _seconds(retry_after))
    return Answer("rejected", status, detail)  # 4xx, or a redirect: resending will not help


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: the backoff applies)."""
    try:
        return max(float(retry_after), 0.0) if retry_after else None
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:DETAIL_LENGTH]


async def push_once(collectors: Iterable[Collector], config: RemoteWriteConfig,
                    deadline: float = 60.0) -> Answer:
    """One collection pushed now (`probe run`), retried with backoff until `deadline` seconds;
    the last answer tells how it ended."""
    batch = encode(families_of(collectors), now_ms())
    answer = Answer("retry", None, "deadline passed before any answer")
    failures = 0
    async with open_session(config) as session:
        end = asyncio.get_running_loop().time() + deadline
        while True:
            answer = await send(session, config.url, batch.body)
            if answer.outcome != "retry":
                return answer
            failures += 1
            wait = config.backoff(failures, answer.retry_after)
            if asyncio.get_running_loop().time() + wait > end:
                return answer
            await asyncio.sleep(wait)
