"""`probe daemon`: measure on an interval, keep the latest results, serve them to Prometheus.

Runs never overlap (one loop, one run at a time); each wait gets random jitter so that volunteers
started together drift apart; a run that fails is logged and counted and the next one is still
scheduled. The measurements reach the metrics only through the `Board` the daemon fills from
finished TargetMeasurements (the runner's `on_result`), never from inside measuring code.

Results that cannot be stored (full disk, a folder that cannot be made again: the store remakes
a vanished one) still reach the metrics; each is counted in `censorprobe_store_errors_total`,
the run logs one line for them and counts as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from probe.model import Target, TargetMeasurement, Vantage, VantageOffline
from probe.monitoring.metrics import ResultsCollector, RunStats, Snapshot
from probe.monitoring.remote_queue import RemoteWriter, WriterCollector
from probe.monitoring.remote_write import RemoteWriteConfig
from probe.results.store import StoreError

log = logging.getLogger("probe.monitoring.daemon")

OnResult = Callable[[TargetMeasurement], None]
Sink = Callable[[TargetMeasurement], object]  # stores a measurement (what it returns is unused)
# The runner: in production `lambda targets, on_result: run_targets(targets, plan, on_result)`.
Runner = Callable[[Iterable[Target], OnResult], Awaitable[Sequence[TargetMeasurement]]]

DEFAULT_LISTEN = ("127.0.0.1", 9464)


@dataclass(frozen=True)
class Schedule:
    interval: float = 900.0  # seconds from the start of one run to the start of the next
    jitter: float = 120.0  # up to this many extra seconds, drawn anew for every wait
    run_timeout: float | None = None  # a run taking longer is cancelled and counted as failed
    max_age_runs: float = 3.0  # results older than this many intervals are no longer exported

    def next_wait(self, run_took: float, rng: random.Random) -> float:
        return max(0.0, self.interval - run_took) + rng.uniform(0.0, max(self.jitter, 0.0))


class Board:
    """The latest measurement per target and the run counters; what a scrape sees."""

    def __init__(self, vantage: Vantage, schedule: Schedule) -> None:
        self.vantage = vantage
        self._schedule = schedule
        self._latest: dict[str, TargetMeasurement] = {}
        self._runs = RunStats(interval=schedule.interval)
        self.store_errors = 0  # measurements that could not be stored, since start

    def record(self, m: TargetMeasurement) -> None:
        self._latest[m.target.domain] = m

    def run_done(self, started: float, ended: float) -> None:
        self._runs = replace(self._runs, runs=self._runs.runs + 1, last_run_end=ended,
                             last_run_duration=ended - started, vantage_up=True)

    def run_failed(self, offline: bool = False) -> None:
        self._runs = replace(self._runs, failures=self._runs.failures + 1,
                             vantage_up=False if offline else self._runs.vantage_up)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Stale results are dropped so a daemon whose runs keep failing stops asserting them."""
        now = time.time() if now is None else now
        oldest = now - self._schedule.max_age_runs * self._schedule.interval
        fresh = tuple(m for _, m in sorted(self._latest.items())
                      if m.start_time + m.runtime >= oldest)
        return Snapshot(self.vantage, fresh, self._runs)


class _StoreErrors:
    """`censorprobe_store_errors_total`, beside the collector built from results."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("censorprobe_store_errors",
                                     "Measurements that could not be stored (disk full, results "
                                     "folder gone and not re-creatable, read-only).",
                                     labels=("vantage", "asn", "cc"))
        v = self._board.vantage
        family.add_metric((v.name, v.asn, v.cc), self._board.store_errors)
        yield family


class Daemon:
    def __init__(self, targets: Iterable[Target], runner: Runner, vantage: Vantage,
                 schedule: Schedule, open_sink: Callable[[], Sink] | None = None,
                 rng: random.Random | None = None) -> None:
        self.targets = targets  # re-iterated every run (validated files are read again)
        self.board = Board(vantage, schedule)
        self.schedule = schedule
        self._runner = runner
        self._open_sink = open_sink  # called once per run, e.g. Store.append with a new report id
        self._sink: Sink | None = None
        self._unstored = 0  # in the current run
        self._store_error = ""  # the first of them
        self._rng = rng or random.Random()

    def _on_result(self, m: TargetMeasurement) -> None:
        self.board.record(m)
        if self._sink is not None:
            try:
                self._sink(m)
            except (StoreError, OSError) as exc:  # a full disk must not cost the metrics
                self._unstored += 1
                self.board.store_errors += 1
                self._store_error = self._store_error or str(exc)  # logged once, at the end

    async def run_once(self) -> bool:
        """One run; True when it completed. Failures are logged and counted, never raised."""
        started, clock = time.time(), time.monotonic()
        self._unstored, self._store_error = 0, ""
        try:
            self._sink = self._open_sink() if self._open_sink is not None else None
            async with asyncio.timeout(self.schedule.run_timeout):
                await self._runner(self.targets, self._on_result)
        except VantageOffline as exc:  # expected on a laptop or a flaky uplink: one line
            self.board.run_failed(offline=True)
            log.warning("vantage offline, nothing measured: %s", exc)
            return False
        except Exception:  # the daemon outlives any one run; the cause goes to the log
            self.board.run_failed()
            log.exception("run failed after %.1f s", time.monotonic() - clock)
            return False
        if self._unstored:  # measured but not kept: not a successful run
            self.board.run_failed()
            log.error("run counted as failed: %d result(s) could not be stored: %s",
                      self._unstored, self._store_error)  # one line, not one per target
            return False
        self.board.run_done(started, started + (time.monotonic() - clock))
        log.info("run took %.1f s", time.monotonic() - clock)
        return True

    async def loop(self, stop: asyncio.Event, first_delay: float | None = None) -> None:
        """Runs until `stop` is set; the first run waits `first_delay` (default: random jitter)."""
        wait = self._rng.uniform(0.0, self.schedule.jitter) if first_delay is None else first_delay
        while not await _wait_or_stop(stop, wait):
            clock = time.monotonic()
            run = asyncio.ensure_future(self.run_once())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not run.done():  # stop requested mid-run: abandon it, results so far are kept
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                return
            wait = self.schedule.next_wait(time.monotonic() - clock, self._rng)
            log.debug("next run in %.1f s", wait)


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps up to `seconds`; True when `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


def collectors_of(board: Board) -> list[Collector]:
    """What /metrics shows and what a remote write pushes: the same families."""
    return [ResultsCollector(board.snapshot), _StoreErrors(board)]


async def start_metrics_server(board: Board, host: str, port: int,
                               collectors: Sequence[Collector] = ()) -> web.AppRunner:
    """Serves /metrics from the board (or from `collectors`); port 0 picks a free port (see
    `bound_port`)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors or collectors_of(board):
        registry.register(collector)
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def serve(daemon: Daemon, host: str, port: int, stop: asyncio.Event | None = None,
                started: Callable[[int], None] | None = None,
                first_delay: float | None = None,
                remote: RemoteWriteConfig | None = None) -> None:
    """The whole daemon: metrics server plus run loop, and with `remote` a remote writer
    pushing the same metrics, until SIGTERM/SIGINT or `stop`."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    collectors = collectors_of(daemon.board)
    writer = None
    if remote is not None:
        writer = RemoteWriter(remote)
        collectors.append(WriterCollector(writer, daemon.board.vantage))
        writer.collectors = collectors
    web_runner = await start_metrics_server(daemon.board, host, port, collectors)
    log.info("serving metrics on http://%s:%d/metrics", host, bound_port(web_runner))
    pushing = asyncio.create_task(writer.run(stop)) if writer is not None else None
    if pushing is not None:  # a writer that dies (a bug) stops the daemon; awaited below
        pushing.add_done_callback(lambda _: stop.set())
    if started is not None:
        started(bound_port(web_runner))
    try:
        await daemon.loop(stop, first_delay)
    finally:
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if pushing is not None:  # its last collection and flush (FINAL_FLUSH) happen now
            await pushing
        await web_runner.cleanup()
        log.info("stopped")
