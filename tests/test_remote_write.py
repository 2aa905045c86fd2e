"""Remote write on the wire and in its queue, against an in-process aiohttp receiver on loopback
whose answers the test scripts (statuses, Retry-After, TLS, auth). The real Prometheus, the
daemon and `probe run` are in test_remote_write_daemon.py."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import cramjam
import pytest
import trustme
from aiohttp import web
from promstack import free_port, sample_run

from probe.model import Vantage
from probe.monitoring.metrics import ResultsCollector, snapshot_of_run
from probe.monitoring.remote_queue import RemoteWriter, WriterCollector
from probe.monitoring.remote_write import (
    HEADERS,
    RemoteWriteConfig,
    decode,
    encode,
    families_of,
    push_once,
)

VANTAGE = Vantage(name="msk-1", asn="AS65001", cc="RU")
FAST = {"min_backoff": 0.05, "max_backoff": 0.2, "timeout": 5.0}


def collectors() -> list[ResultsCollector]:
    snapshot = snapshot_of_run(sample_run(), VANTAGE, 900.0)
    return [ResultsCollector(lambda: snapshot)]


@dataclass
class Receiver:
    """Answers each POST with the next scripted (status, headers), then 204 for ever."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def timestamps(self) -> list[int]:
        """The (single) timestamp of each request received, in arrival order."""
        return [decode(body).timeseries[0].samples[0].timestamp for _, body in self.requests]


async def _serve(handler: Callable, ssl_context=None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/api/v1/write", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rx.requests.append((dict(request.headers), await request.read()))
        status, headers = rx.script.pop(0) if rx.script else (204, {})
        return web.Response(status=status, headers=headers, text="" if status < 300 else "no")

    runner, port = await _serve(handle)
    rx.url = f"http://127.0.0.1:{port}/api/v1/write"
    yield rx
    await runner.cleanup()


# --- the request ---------------------------------------------------------------------------------


def test_a_request_is_a_snappy_block_writerequest_with_sorted_labels_and_one_timestamp() -> None:
    batch = encode(families_of(collectors()), 1_700_000_000_123)
    raw = bytes(cramjam.snappy.decompress_raw(batch.body))  # block format, not framed
    assert len(raw) == batch.raw_bytes > len(batch.body)
    request = decode(batch.body)
    assert len(request.timeseries) == batch.samples > 20
    for ts in request.timeseries:
        names = [label.name for label in ts.labels]
        assert names == sorted(names) and len(set(names)) == len(names) and "__name__" in names
        labels = {label.name: label.value for label in ts.labels}
        assert (labels["vantage"], labels["asn"], labels["cc"]) == ("msk-1", "AS65001", "RU")
        assert [s.timestamp for s in ts.samples] == [1_700_000_000_123]
    names = {label.value for ts in request.timeseries for label in ts.labels
             if label.name == "__name__"}
    assert {"censorprobe_target_verdict", "censorprobe_runs_total",
            "censorprobe_vantage_info"} <= names


def test_credentials_are_one_kind_or_the_other() -> None:
    with pytest.raises(ValueError, match="not both"):
        RemoteWriteConfig("http://127.0.0.1/", token="t", user="u", password="p")
    with pytest.raises(ValueError, match="both a user and a password"):
        RemoteWriteConfig("http://127.0.0.1/", user="u")
    config = RemoteWriteConfig("http://127.0.0.1/", min_backoff=0.5, max_backoff=5.0)
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5, 50)] == [0.5, 1, 2, 4, 5, 5]
    assert config.backoff(1, retry_after=30.0) == 30.0 and config.backoff(1, 1e9) == 300.0


# --- answers -------------------------------------------------------------------------------------


async def test_2xx_is_sent_with_the_three_headers_and_a_bearer_token(receiver: Receiver) -> None:
    config = RemoteWriteConfig(receiver.url, token="s3cret", **FAST)
    answer = await push_once(collectors(), config)
    assert (answer.outcome, answer.status) == ("sent", 204)
    [(headers, body)] = receiver.requests
    assert {k: headers[k] for k in HEADERS} == HEADERS
    assert headers["Authorization"] == "Bearer s3cret"
    assert decode(body).timeseries


async def test_basic_auth(receiver: Receiver) -> None:
    config = RemoteWriteConfig(receiver.url, user="msk-1", password="pw", **FAST)
    assert (await push_once(collectors(), config)).outcome == "sent"
    [(headers, _)] = receiver.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"msk-1:pw").decode()


async def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(
    receiver: Receiver,
) -> None:
    receiver.script = [(503, {}), (429, {"Retry-After": "0.3"}), (500, {})]
    started = time.monotonic()
    answer = await push_once(collectors(), RemoteWriteConfig(receiver.url, **FAST))
    took = time.monotonic() - started
    assert answer.outcome == "sent" and len(receiver.requests) == 4
    assert len(set(receiver.timestamps())) == 1  # the same request, resent
    assert 0.05 + 0.3 + 0.2 <= took < 5, took  # backoffs 0.05, max(0.1, Retry-After), 0.2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 301])
async def test_4xx_and_redirects_are_dropped_never_retried(receiver: Receiver, status: int) -> None:
    receiver.script = [(status, {"Location": "http://127.0.0.1:1/"})]
    writer = RemoteWriter(RemoteWriteConfig(receiver.url, **FAST), collectors())
    batch = writer.collect_now()
    async with _session(writer) as session:
        await asyncio.wait_for(writer.drain(session), 5)
    assert len(receiver.requests) == 1
    assert writer.stats.rejected_samples == batch.samples and writer.stats.sent_samples == 0
    assert writer.stats.queued_bytes == 0


async def test_no_receiver_is_retried_until_the_deadline() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v1/write"
    answer = await push_once(collectors(), RemoteWriteConfig(url, **FAST), deadline=0.5)
    assert answer.outcome == "retry" and answer.status is None
    assert "Connect" in answer.detail or "refused" in answer.detail, answer.detail


async def test_tls_trusts_only_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    got: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=200)

    runner, port = await _serve(handle, server_ctx)
    try:
        url = f"https://127.0.0.1:{port}/api/v1/write"
        trusted = RemoteWriteConfig(url, ca_file=str(tmp_path / "ca.pem"), **FAST)
        assert (await push_once(collectors(), trusted)).outcome == "sent"
        untrusted = await push_once(collectors(), RemoteWriteConfig(url, **FAST), deadline=0.3)
        assert untrusted.outcome == "retry" and "ertificate" in untrusted.detail
        assert len(got) == 1
    finally:
        await runner.cleanup()


# --- the queue -----------------------------------------------------------------------------------


def _session(writer: RemoteWriter):
    from probe.monitoring.remote_write import open_session

    return open_session(writer.config)


async def test_an_outage_keeps_every_request_and_sends_them_in_time_order(
    receiver: Receiver,
) -> None:
    clock = iter(range(1_000, 10_000, 1_000))
    writer = RemoteWriter(RemoteWriteConfig(receiver.url, **FAST), collectors(),
                          clock=lambda: next(clock))
    receiver.script = [(503, {})] * 6
    for _ in range(4):
        writer.collect_now()
    async with _session(writer) as session:
        await asyncio.wait_for(writer.drain(session), 10)
    assert receiver.timestamps() == [1000] * 7 + [2000, 3000, 4000]
    assert writer.stats.failed_requests == 6 and writer.stats.queued_samples == 0


def test_timestamps_never_go_backwards_even_if_the_clock_does() -> None:
    clock = iter([5_000, 4_000, 4_000, 6_000])
    writer = RemoteWriter(RemoteWriteConfig("http://127.0.0.1/"), collectors(),
                          clock=lambda: next(clock))
    assert [writer.collect_now().timestamp_ms for _ in range(4)] == [5000, 5001, 5002, 6000]


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    one = len(encode(families_of(collectors()), 1).body)
    writer = RemoteWriter(RemoteWriteConfig("http://127.0.0.1/", queue_bytes=3 * one + one // 2),
                          collectors(), clock=iter(range(1, 100)).__next__)
    writer.collectors.append(WriterCollector(writer, VANTAGE))
    batches = [writer.collect_now() for _ in range(6)]
    assert writer.stats.evicted_samples == sum(b.samples for b in batches[:3])
    assert [b.timestamp_ms for b in writer._queue] == [4, 5, 6]
    assert writer.stats.queued_bytes == sum(len(b.body) for b in batches[3:])
    dropped = [s for ts in decode(writer.collect_now().body).timeseries for s in ts.samples
               if {(label.name, label.value) for label in ts.labels}
               >= {("__name__", "censorprobe_remote_write_samples_dropped_total"),
                   ("reason", "queue_full")}]
    assert [s.value for s in dropped] == [sum(b.samples for b in batches[:3])]
