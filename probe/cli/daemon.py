"""`probe daemon`: the click command; wiring only (probe.monitoring.daemon does the work)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from probe.cli import notices
from probe.cli.options import (
    MeasurementOptions,
    load_targets_or_exit,
    measurement_options,
    targets_option,
)
from probe.cli.remote import remote_write_options
from probe.cli.upload import TOKEN_ENV, collector_option, settings_or_exit
from probe.monitoring.daemon import DEFAULT_LISTEN, Daemon, Runner, Schedule, serve
from probe.monitoring.remote_write import RemoteWriteConfig

if TYPE_CHECKING:
    from probe.results.upload import UploadSettings

log = logging.getLogger("probe.monitoring.daemon")


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:9464) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or DEFAULT_LISTEN[0], int(port)


def _check_listen(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@targets_option
@measurement_options
@click.option("--interval", type=click.FloatRange(10, 7 * 86400), default=900.0,
              show_default=True, help="Seconds from one run's start to the next.")
@click.option("--jitter", type=click.FloatRange(0, 86400), default=120.0, show_default=True,
              help="Up to this many random extra seconds before each run.")
@click.option("--run-timeout", type=click.FloatRange(1, 86400), default=1800.0,
              show_default=True, help="A run taking longer is cancelled and counted as failed.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Targets with connections open at once (one whose DNS queries only wait "
                   "for late, injected answers does not count).")
@click.option("--listen", default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}", show_default=True,
              callback=_check_listen, help="Serve /metrics here (HOST:PORT).")
@collector_option
@click.option("--collector-token", envvar=TOKEN_ENV, metavar="TOKEN",
              help=f"This vantage's collector token (or {TOKEN_ENV}).")
@remote_write_options
@click.option("--remote-write-interval", type=click.FloatRange(1, 240), default=60.0,
              show_default=True,
              help="Seconds between two pushes of every metric to --remote-write (keep it under "
              "the receiver's 5-minute lookback).")
def daemon(target_files: tuple[Path, ...], measurement: MeasurementOptions, interval: float,
           jitter: float, run_timeout: float, concurrency: int, listen: tuple[str, int],
           collector: str | None, collector_token: str | None,
           remote_write: RemoteWriteConfig | None, remote_write_interval: float) -> None:
    """Measure on an interval and serve Prometheus metrics (stops on SIGTERM); with
    --remote-write, also push them; with --collector, upload results after each run."""
    from probe.cli.session import Session

    targets = load_targets_or_exit(target_files)
    session = Session.open_or_exit(measurement, concurrency)

    schedule = Schedule(interval=interval, jitter=jitter, run_timeout=run_timeout)
    runner: Runner = session.run
    if collector:
        settings = settings_or_exit(collector, collector_token, measurement.ca_file)
        runner = _then_upload(runner, measurement.out_dir, settings)
        log.warning("results are uploaded to %s after each run", settings.endpoint)
    worker = Daemon(targets, runner, session.vantage, schedule, session.recorder)
    log.warning("probe daemon: %d targets every %.0f s (+0-%.0f s), metrics on %s:%d",
                len(targets), interval, jitter, *listen)
    if remote_write is not None:
        remote_write = dataclasses.replace(remote_write, interval=remote_write_interval)
        log.warning("pushing metrics every %.0f s to %s", remote_write_interval,
                    remote_write.url)
    for line in notices.contacts(measurement.controls()):  # every run contacts the same ones
        log.warning("%s", line.removeprefix("probe: "))
    try:
        asyncio.run(serve(worker, *listen, remote=remote_write))
    except OSError as exc:  # runs catch their own errors: this is the metrics server's bind
        raise click.BadParameter(f"cannot listen on {listen[0]}:{listen[1]}: "
                                 f"{exc.strerror or exc}", param_hint="--listen") from None


def _then_upload(run: Runner, out_dir: Path, settings: UploadSettings) -> Runner:
    """The runner, then an upload of the results in the background after each run (failed or
    not): the next run never waits for it."""
    from probe.results.upload import BackgroundUpload

    background = BackgroundUpload(out_dir, settings)

    async def run_then_upload(targets, on_result):  # noqa: ANN001 - the Runner signature
        try:
            return await run(targets, on_result)
        finally:
            background.kick()

    return run_then_upload
