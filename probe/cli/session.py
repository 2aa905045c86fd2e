"""The set-up every measuring command shares (`run`, `check`, `daemon`): the results store, the
vantage, the run plan with the store's history, and a new report id per run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from probe.cli.options import MeasurementOptions
from probe.model import Target, TargetMeasurement, Vantage
from probe.results.ooni import new_report_id
from probe.results.store import Store, local_addresses
from probe.runner import RunPlan, run_targets

OnResult = Callable[[TargetMeasurement], None]


@dataclass(frozen=True)
class Session:
    store: Store
    vantage: Vantage
    plan: RunPlan

    @classmethod
    def open(cls, options: MeasurementOptions, concurrency: int) -> Session:
        vantage = options.vantage_point()
        store = Store(options.out_dir, vantage, scrub_addresses=local_addresses())
        plan = replace(options.plan(concurrency), history=store.control_rate_history)
        return cls(store, vantage, plan)

    def recorder(self) -> Callable[[TargetMeasurement], dict[str, Any]]:
        """Stores each measurement of one run (a new report id) and returns its record."""
        report_id = new_report_id(self.vantage)
        return lambda m: self.store.append(m, report_id)

    async def run(self, targets: Sequence[Target], on_result: OnResult) -> list[TargetMeasurement]:
        """Measures the targets; the helper's view of our address is scrubbed as it is learnt."""
        return await run_targets(targets, self.plan, on_result,
                                 client_ips=self.store.scrub_addresses)
