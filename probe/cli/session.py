"""The set-up every measuring command shares (`run`, `check`, `daemon`): the results store, the
vantage, the run plan with the store's history, the vantage check before each run, and a new
report id per run.

Exit statuses (README): 0 done; 1 a failure click or Python reports; 2 bad input (an option, a
target file, a results folder that cannot be used), nothing measured; 3 results could not be
stored mid-run (the run stopped, earlier records intact); 4 this vantage point is offline
(nothing measured or stored); 5 some targets hit an internal error (recorded as inconclusive,
every other target stored).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import click

from probe import health
from probe.cli import notices
from probe.cli.options import MeasurementOptions
from probe.measure.tlsctx import small_tls_reads_while
from probe.measure.ttlprobe import raw_allowed
from probe.model import Target, TargetMeasurement, Vantage, VantageOffline
from probe.results.ooni import new_report_id
from probe.results.store import Store, StoreError, local_addresses
from probe.runner import RunPlan, run_targets

OnResult = Callable[[TargetMeasurement], None]
EXIT_INPUT, EXIT_STORE, EXIT_OFFLINE, EXIT_INTERNAL = 2, 3, 4, 5
# group commit (results/store.py): a crash loses at most this many records or seconds of them
STORE_BATCH, STORE_FLUSH_SECONDS = 64, 1.0


@dataclass
class Session:
    store: Store
    vantage: Vantage
    plan: RunPlan
    last_health: health.Health | None = None
    flush_error: StoreError | None = None  # a periodic flush failed: the next record raises it

    @classmethod
    def open(cls, options: MeasurementOptions, concurrency: int) -> Session:
        """Raises StoreError when the results folder cannot be used (see `open_or_exit`)."""
        vantage = options.vantage_point()
        store = Store(options.out_dir, vantage, scrub_addresses=local_addresses(),
                      batch=STORE_BATCH)
        store.check_writable()
        plan = replace(options.plan(concurrency), history=store.control_rate_history)
        if plan.locate and not raw_allowed():
            click.echo(notices.NO_RAW_SOCKETS, err=True)  # once per run; nothing else changes
            plan = replace(plan, locate=False)
        return cls(store, vantage, plan)

    @property
    def controls(self) -> tuple[str, ...]:
        plan = self.plan
        return (*plan.control_resolvers, *((plan.helper_url,) if plan.helper_url else ()),
                *plan.th_urls)

    @classmethod
    def open_or_exit(cls, options: MeasurementOptions, concurrency: int) -> Session:
        """`open`, or one line naming --out and exit 2, before anything is measured."""
        try:
            return cls.open(options, concurrency)
        except StoreError as exc:
            click.echo(f"error: --out: {exc}", err=True)
            raise SystemExit(EXIT_INPUT) from None

    def recorder(self) -> Callable[[TargetMeasurement], dict[str, Any]]:
        """Stores each measurement of one run (a new report id) and returns its record."""
        report_id = new_report_id(self.vantage)

        def record(m: TargetMeasurement) -> dict[str, Any]:
            self._raise_flush_error()
            return self.store.append(m, report_id)

        return record

    def _raise_flush_error(self) -> None:
        error, self.flush_error = self.flush_error, None
        if error is not None:
            raise error

    async def _flush_periodically(self) -> None:
        """Bounds what a crash loses in time too, when targets complete slowly."""
        while True:
            await asyncio.sleep(STORE_FLUSH_SECONDS)
            try:
                self.store.flush()
            except StoreError as exc:  # raised where records are stored, so the run stops
                self.flush_error = exc
                return

    async def run(self, targets: Iterable[Target], on_result: OnResult,
                  on_health: Callable[[health.Health], None] | None = None
                  ) -> list[TargetMeasurement]:
        """Checks the vantage, then measures the targets as they are pulled (nothing kept: the
        sink has the results); the helper's view of our address is scrubbed as it is learnt.
        Raises VantageOffline, having measured nothing, when there is no network."""
        pulled = iter(targets)
        first = list(itertools.islice(pulled, health.NAMES_CHECKED))
        names = [urlsplit(t.url).hostname or t.domain for t in first]
        self.last_health = await health.check(names, self.controls, self.plan.settings)
        if not self.last_health.online:
            raise VantageOffline(self.last_health.describe())
        if on_health is not None:
            on_health(self.last_health)
        targets = itertools.chain(first, pulled)
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            # no throughput flow: no bulk read goes through asyncio's TLS read buffers
            with small_tls_reads_while(not self.plan.throughput):
                return await run_targets(targets, self.plan, on_result,
                                         client_ips=self.store.scrub_addresses, collect=False)
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            self._raise_flush_error()
            self.store.flush()  # whatever the run's outcome, what it measured is kept
