"""The daemon's remote write: collect the registry every interval into an in-memory queue, send
the queue oldest first, retry with exponential backoff while the receiver is away.

The queue holds encoded requests (snappy-compressed WriteRequests, one per collection) and is
bounded in bytes (`RemoteWriteConfig.queue_bytes`); when full, the oldest request is dropped and
counted. Requests go out one at a time in the order they were collected, and a request that must
be retried holds back the newer ones, so every series reaches the receiver in time order. The
queue lives in memory only: a daemon that is stopped loses what it had not sent (it tries once
more to flush it before exiting). How long an outage it bridges is in docs/fleet.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probe.model import Vantage
from probe.monitoring.remote_write import (
    Answer,
    Batch,
    RemoteWriteConfig,
    encode,
    families_of,
    now_ms,
    open_session,
    send,
)

log = logging.getLogger("probe.monitoring.remote_write")

FINAL_FLUSH = 5.0  # seconds a stopping daemon spends sending what is still queued


@dataclass
class WriterStats:
    sent_samples: int = 0  # accepted by the receiver (2xx)
    rejected_samples: int = 0  # refused with a 4xx: dropped, never retried
    evicted_samples: int = 0  # dropped from a full queue
    failed_requests: int = 0  # answered 429/5xx or not at all: retried
    queued_bytes: int = 0
    queued_samples: int = 0


class RemoteWriter:
    """Owns the queue; `collect_now()` adds a request, `drain()` sends until the queue is empty.
    `collectors` (settable after construction: the writer's own counters are among them) are
    what each request holds."""

    def __init__(self, config: RemoteWriteConfig, collectors: Iterable[Collector] = (),
                 clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.stats = WriterStats()
        self.collectors = list(collectors)
        self._clock = clock
        self._queue: deque[Batch] = deque()
        self._last_ms = 0
        self._wake = asyncio.Event()
        self._failing_since: float | None = None

    def collect_now(self) -> Batch:
        """Encodes every sample now and queues it."""
        return self._enqueue(encode(families_of(self.collectors), self._next_ms()))

    async def collect_in_thread(self) -> Batch:
        """The same, with the encoding (the costly part) off the event loop, so a large target
        list does not stall a measurement running beside it."""
        families, stamp = families_of(self.collectors), self._next_ms()
        return self._enqueue(await asyncio.to_thread(encode, families, stamp))

    def _next_ms(self) -> int:
        """Timestamps never go backwards (a receiver refuses an out-of-order sample), even if the
        wall clock does."""
        self._last_ms = max(self._clock(), self._last_ms + 1)
        return self._last_ms

    def _enqueue(self, batch: Batch) -> Batch:
        self._queue.append(batch)
        self.stats.queued_bytes += len(batch.body)
        self.stats.queued_samples += batch.samples
        while self.stats.queued_bytes > self.config.queue_bytes and len(self._queue) > 1:
            oldest = self._queue.popleft()
            self._forget(oldest)
            self.stats.evicted_samples += oldest.samples
            log.warning("remote write queue full (%d bytes): dropped the oldest %d samples",
                        self.config.queue_bytes, oldest.samples)
        self._wake.set()
        return batch

    def _forget(self, batch: Batch) -> None:
        self.stats.queued_bytes -= len(batch.body)
        self.stats.queued_samples -= batch.samples

    async def drain(self, session: aiohttp.ClientSession) -> None:
        """Sends the queue oldest first; waits out failures with exponential backoff."""
        failures = 0
        while self._queue:
            batch = self._queue[0]
            answer = await send(session, self.config.url, batch.body)
            if answer.outcome == "retry":
                failures += 1
                self._failed(answer, failures)
                await asyncio.sleep(self.config.backoff(failures, answer.retry_after))
                continue
            if self._queue and self._queue[0] is batch:  # not evicted while in flight
                self._queue.popleft()
                self._forget(batch)
                self._done(batch, answer, failures)
            failures = 0

    def _failed(self, answer: Answer, failures: int) -> None:
        self.stats.failed_requests += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("remote write to %s failing (%s), retrying with backoff; %d samples "
                        "queued", self.config.url, _what(answer), self.stats.queued_samples)
        else:
            log.debug("remote write attempt %d failed: %s", failures, _what(answer))

    def _done(self, batch: Batch, answer: Answer, failures: int) -> None:
        if self._failing_since is not None:
            log.warning("remote write to %s works again after %.0f s and %d failed attempts",
                        self.config.url, time.monotonic() - self._failing_since, failures)
            self._failing_since = None
        if answer.outcome == "sent":
            self.stats.sent_samples += batch.samples
        else:
            self.stats.rejected_samples += batch.samples
            log.warning("remote write refused by %s (%s): %d samples dropped", self.config.url,
                        _what(answer), batch.samples)

    async def run(self, stop: asyncio.Event) -> None:
        """Collects every `config.interval` seconds (the first at once) and keeps sending until
        `stop`; then one last collection and a flush of at most FINAL_FLUSH seconds."""
        async with open_session(self.config) as session:
            sender = asyncio.create_task(self._send_forever(session))
            try:
                while not stop.is_set():
                    await self.collect_in_thread()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.config.interval)
                    if sender.done():
                        sender.result()  # a programming error in the sender surfaces here
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            self.collect_now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(session), FINAL_FLUSH)
            if self._queue:
                log.warning("remote write: %d samples not sent at exit",
                            self.stats.queued_samples)

    async def _send_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain(session)


def _what(answer: Answer) -> str:
    status = f"HTTP {answer.status}" if answer.status is not None else "no answer"
    return f"{status}: {answer.detail}" if answer.detail else status


class WriterCollector(Collector):
    """`censorprobe_remote_write_*`: the writer's own counters, on /metrics and in the pushes."""

    def __init__(self, writer: RemoteWriter, vantage: Vantage) -> None:
        self._writer = writer
        self._key = [vantage.name, vantage.asn, vantage.cc]

    def collect(self) -> Iterator[Metric]:
        s, labels = self._writer.stats, ["vantage", "asn", "cc"]
        sent = CounterMetricFamily("censorprobe_remote_write_samples",
                                   "Samples the remote-write receiver accepted.", labels=labels)
        sent.add_metric(self._key, s.sent_samples)
        dropped = CounterMetricFamily("censorprobe_remote_write_samples_dropped",
                                      "Samples dropped: refused by the receiver (4xx) or pushed "
                                      "out of a full queue.", labels=[*labels, "reason"])
        dropped.add_metric([*self._key, "rejected"], s.rejected_samples)
        dropped.add_metric([*self._key, "queue_full"], s.evicted_samples)
        failed = CounterMetricFamily("censorprobe_remote_write_failed_requests",
                                     "Requests answered 429/5xx or not at all (retried).",
                                     labels=labels)
        failed.add_metric(self._key, s.failed_requests)
        queued = GaugeMetricFamily("censorprobe_remote_write_queue_bytes",
                                   "Compressed requests waiting to be sent.", labels=labels)
        queued.add_metric(self._key, s.queued_bytes)
        yield from (sent, dropped, failed, queued)
