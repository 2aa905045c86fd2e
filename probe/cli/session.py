"""The set-up every measuring command shares (`run`, `check`, `daemon`): the results store, the
vantage, the run plan with the store's history, the vantage check before each run, and a new
report id per run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from probe import health
from probe.cli.options import MeasurementOptions
from probe.model import Target, TargetMeasurement, Vantage, VantageOffline
from probe.results.ooni import new_report_id
from probe.results.store import Store, local_addresses
from probe.runner import RunPlan, run_targets

OnResult = Callable[[TargetMeasurement], None]
EXIT_OFFLINE = 4  # the vantage has no network: nothing measured, nothing stored


@dataclass
class Session:
    store: Store
    vantage: Vantage
    plan: RunPlan
    last_health: health.Health | None = None

    @classmethod
    def open(cls, options: MeasurementOptions, concurrency: int) -> Session:
        vantage = options.vantage_point()
        store = Store(options.out_dir, vantage, scrub_addresses=local_addresses())
        plan = replace(options.plan(concurrency), history=store.control_rate_history)
        return cls(store, vantage, plan)

    @property
    def controls(self) -> tuple[str, ...]:
        plan = self.plan
        return (*plan.control_resolvers, *((plan.helper_url,) if plan.helper_url else ()),
                *plan.th_urls)

    def recorder(self) -> Callable[[TargetMeasurement], dict[str, Any]]:
        """Stores each measurement of one run (a new report id) and returns its record."""
        report_id = new_report_id(self.vantage)
        return lambda m: self.store.append(m, report_id)

    async def run(self, targets: Sequence[Target], on_result: OnResult,
                  on_health: Callable[[health.Health], None] | None = None
                  ) -> list[TargetMeasurement]:
        """Checks the vantage, then measures the targets; the helper's view of our address is
        scrubbed as it is learnt. Raises VantageOffline, having measured nothing, when there
        is no network."""
        names = [urlsplit(t.url).hostname or t.domain for t in targets[: health.NAMES_CHECKED]]
        self.last_health = await health.check(names, self.controls, self.plan.settings)
        if not self.last_health.online:
            raise VantageOffline(self.last_health.describe())
        if on_health is not None:
            on_health(self.last_health)
        return await run_targets(targets, self.plan, on_result,
                                 client_ips=self.store.scrub_addresses)
