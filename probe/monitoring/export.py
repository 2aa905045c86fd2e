"""One-shot metrics export for `probe run`: push to a Pushgateway or by remote write, or write a
node_exporter textfile.

Both expose the same families as the daemon's /metrics (probe.monitoring.metrics). No sample carries a
timestamp: the Pushgateway rejects them, and Prometheus stamps samples at scrape time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile

from probe.model import TargetMeasurement, Vantage
from probe.monitoring.metrics import ResultsCollector, snapshot_of_run
from probe.monitoring.remote_write import Answer, RemoteWriteConfig, push_once

JOB = "censorprobe"
# One-shot runs come from a timer (systemd/probe.timer: hourly); the vantage-silent alert needs
# to know how often to expect them.
ONESHOT_INTERVAL = 3600.0


def registry_for(measurements: Sequence[TargetMeasurement], vantage: Vantage,
                 interval: float | None = None) -> CollectorRegistry:
    snapshot = snapshot_of_run(measurements, vantage, interval)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResultsCollector(lambda: snapshot))
    return registry


def push(measurements: Sequence[TargetMeasurement], gateway_url: str, vantage: Vantage,
         interval: float | None = ONESHOT_INTERVAL, timeout: float = 30.0) -> None:
    """Replaces this vantage's group on the Pushgateway (job=censorprobe, vantage=NAME).

    `interval` is how often the caller's timer runs; it feeds the vantage-silent alert.
    Raises OSError (urllib's URLError) when the gateway cannot be reached or refuses the push.
    """
    registry = registry_for(measurements, vantage, interval)
    push_to_gateway(gateway_url, job=JOB, registry=registry,
                    grouping_key={"vantage": vantage.name}, timeout=timeout)


async def remote_write(measurements: Sequence[TargetMeasurement], config: RemoteWriteConfig,
                       vantage: Vantage, interval: float | None = ONESHOT_INTERVAL,
                       deadline: float = 60.0) -> Answer:
    """One remote-write push of the run's metrics, all stamped now, retried with backoff up to
    `deadline` seconds; the Answer says how it ended (sent, rejected, or still failing)."""
    snapshot = snapshot_of_run(measurements, vantage, interval)
    return await push_once([ResultsCollector(lambda: snapshot)], config, deadline)


def write_textfile(measurements: Sequence[TargetMeasurement], path: str | Path,
                   vantage: Vantage | None = None,
                   interval: float | None = ONESHOT_INTERVAL) -> None:
    """Writes atomically (a temporary file beside `path`, then rename), so node_exporter never
    reads half a file. `path` should end in .prom for the textfile collector to read it."""
    registry = registry_for(measurements, vantage or Vantage(), interval)
    write_to_textfile(str(path), registry)
