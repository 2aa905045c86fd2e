"""The `probe` command. Thin: parse options, call the runner and the store, print.

Results go to stdout (tables, or one JSON object per target with --json); progress and logs go
to stderr, so `probe run --json | jq` works.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from probe import __version__
from probe.model import Target, TargetMeasurement
from probe.options import (
    load_targets_or_exit,
    measurement_options,
    plan_from,
    targets_option,
    vantage_from,
)

log = logging.getLogger("probe")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probe")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Measure blocking and throttling of internet services, with controls and verdicts."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _stdout() -> Console:
    """Tables on stdout; piped or captured, wide enough that no cell is cut (`| grep` works)."""
    return Console(width=None if sys.stdout.isatty() else 200)


def _progress(total: int, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True), disable=not enabled, transient=True,
    )


def _measure(targets: list[Target], options: dict[str, Any], as_json: bool,
             concurrency: int) -> list[TargetMeasurement]:
    """Runs the targets, storing each as it completes (a killed run keeps what it finished)."""
    from probe.ooni import new_report_id
    from probe.report import json_line
    from probe.runner import run_targets
    from probe.store import Store, local_addresses

    vantage = vantage_from(options)
    store = Store(options["out_dir"], vantage, scrub_addresses=local_addresses())
    report_id = new_report_id(vantage)
    plan = replace(plan_from(options, concurrency), history=store.control_rate_history)
    with _progress(len(targets), sys.stderr.isatty()) as progress:
        task = progress.add_task("", total=len(targets))

        def on_result(m: TargetMeasurement) -> None:
            record = store.append(m, report_id)
            if as_json:
                click.echo(json_line(record))
            progress.update(task, advance=1, description=m.target.domain)

        return asyncio.run(run_targets(targets, plan, on_result, client_ips=store.scrub_addresses))


@main.command()
@targets_option
@measurement_options
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target on stdout.")
@click.option("--pushgateway", metavar="URL", help="Push metrics to this Pushgateway.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write metrics for node_exporter's textfile collector (atomically).")
def run(target_files: tuple[Path, ...], concurrency: int, as_json: bool,
        pushgateway: str | None, textfile: Path | None, **options: Any) -> None:
    """Measure every target and give each a verdict."""
    targets = load_targets_or_exit(target_files)
    results = _measure(targets, options, as_json, concurrency)
    if not as_json:
        from probe.report import verdict_table

        _stdout().print(verdict_table(results))
    if pushgateway or textfile:
        from probe import export

        if pushgateway:
            export.push(results, pushgateway, vantage_from(options))
        if textfile:
            export.write_textfile(results, textfile, vantage_from(options))


@main.command()
@click.argument("domain")
@click.option("--url", help="URL to fetch (default https://DOMAIN/).")
@click.option("--control", "control_domain", help="Control SNI / domain for this target.")
@click.option("--json", "as_json", is_flag=True, help="The stored record as JSON.")
@measurement_options
def check(domain: str, url: str | None, control_domain: str | None, as_json: bool,
          **options: Any) -> None:
    """Measure one DOMAIN and show its full trace."""
    from probe.report import trace
    from probe.targets import make_target

    try:
        target = make_target(domain, url=url, control=control_domain, source="command line")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="DOMAIN") from None
    [measurement] = _measure([target], options, as_json, 1)
    if not as_json:
        trace(measurement, _stdout())


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True)
@click.option("--runs", "limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--report-id", help="Show the verdicts of this run (default: the latest).")
def results(out_dir: Path, limit: int, report_id: str | None) -> None:
    """Past runs, and the verdicts of the latest (or a chosen) run, as tables."""
    from probe.report import latest_table, runs_table
    from probe.store import Store

    store = Store(out_dir, vantage="")
    console = _stdout()
    console.print(runs_table(store.runs(limit)))
    console.print(latest_table(store.latest(report_id)))


def _register_subcommands() -> None:
    """Commands that live beside their subsystem: the helper server, the lab, the daemon."""
    from probe.daemon_cli import daemon
    from probe.lab.cli import lab
    from probe.server.cli import serve

    for command in (serve, lab, daemon):
        main.add_command(command)


_register_subcommands()
