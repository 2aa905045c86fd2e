"""`probe run` and `probe check`: measure targets, store every result, print verdicts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from probe.cli import console, notices
from probe.cli.options import (
    MeasurementOptions,
    load_targets_or_exit,
    measurement_options,
    targets_option,
)
from probe.cli.session import EXIT_OFFLINE, Session
from probe.model import Target, TargetMeasurement, VantageOffline


def _measure(targets: list[Target], options: MeasurementOptions, as_json: bool,
             concurrency: int) -> list[TargetMeasurement]:
    """Runs the targets, storing each as it completes (a killed run keeps what it finished)."""
    from probe.results.tables import json_line

    session = Session.open(options, concurrency)
    _say(notices.contacts(options.controls()))
    record = session.recorder()
    with console.progress(sys.stderr.isatty()) as progress:
        task = progress.add_task("", total=len(targets))

        def on_result(m: TargetMeasurement) -> None:
            stored = record(m)
            if as_json:
                click.echo(json_line(stored))
            progress.update(task, advance=1, description=m.target.domain)

        try:
            results = asyncio.run(session.run(
                targets, on_result, lambda health: _say(notices.unreachable_controls(health))))
        except VantageOffline as exc:
            click.echo(f"error: this vantage point is offline ({exc}): nothing was measured",
                       err=True)
            raise SystemExit(EXIT_OFFLINE) from None
    _say(notices.after_run(results, session.last_health))
    return results


def _say(lines: list[str]) -> None:
    for line in lines:
        click.echo(line, err=True)


@click.command()
@targets_option
@measurement_options
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target on stdout.")
@click.option("--pushgateway", metavar="URL", help="Push metrics to this Pushgateway.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write metrics for node_exporter's textfile collector (atomically).")
def run(target_files: tuple[Path, ...], measurement: MeasurementOptions, concurrency: int,
        as_json: bool, pushgateway: str | None, textfile: Path | None) -> None:
    """Measure every target and give each a verdict."""
    targets = load_targets_or_exit(target_files)
    results = _measure(targets, measurement, as_json, concurrency)
    if not as_json:
        from probe.results.tables import verdict_table

        console.stdout().print(verdict_table(results))
    if pushgateway or textfile:
        from probe.monitoring import export

        if pushgateway:
            export.push(results, pushgateway, measurement.vantage_point())
        if textfile:
            export.write_textfile(results, textfile, measurement.vantage_point())


@click.command()
@click.argument("domain")
@click.option("--url", help="URL to fetch (default https://DOMAIN/).")
@click.option("--control", "control_domain", help="Control SNI / domain for this target.")
@click.option("--json", "as_json", is_flag=True, help="The stored record as JSON.")
@measurement_options
def check(domain: str, url: str | None, control_domain: str | None, as_json: bool,
          measurement: MeasurementOptions) -> None:
    """Measure one DOMAIN and show its full trace."""
    from probe.results.tables import trace
    from probe.targets import make_target

    try:
        target = make_target(domain, url=url, control=control_domain, source="command line")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="DOMAIN") from None
    [measurement_done] = _measure([target], measurement, as_json, 1)
    if not as_json:
        trace(measurement_done, console.stdout())
