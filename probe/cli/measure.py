"""`probe run` and `probe check`: measure targets, store every result, print verdicts.

Targets are pulled from the (already validated) lists as the run goes and every result goes to
the store as it completes: memory follows `--concurrency`, not the list. The table printed at
the end keeps a slim copy (target and verdict) of the first TABLE_ROWS targets only.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import click

from probe.cli import console, notices
from probe.cli.options import (
    MeasurementOptions,
    http_url_param,
    load_targets_or_exit,
    measurement_options,
    targets_option,
)
from probe.cli.remote import EXIT_EXPORT, remote_write_options
from probe.cli.session import EXIT_INPUT, EXIT_INTERNAL, EXIT_OFFLINE, EXIT_STORE, Session
from probe.model import Evidence, Target, TargetMeasurement, VantageOffline
from probe.monitoring.remote_write import RemoteWriteConfig
from probe.results.store import StoreError
from probe.runner import is_internal_error
from probe.targets import TargetFileError

TABLE_ROWS = 1000


@dataclass
class _Tally:
    """What the end of a run needs: a few rows for the table, counts, and (only for a metrics
    export) every measurement."""

    keep_all: bool = False
    shown: list[TargetMeasurement] = field(default_factory=list)
    kept: list[TargetMeasurement] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    internal: list[str] = field(default_factory=list)  # domains that hit an internal error
    notes: notices.RunNotes = field(default_factory=notices.RunNotes)

    def add(self, m: TargetMeasurement) -> None:
        self.verdicts[m.verdict.verdict if m.verdict else "none"] += 1
        self.notes.add(m)
        if is_internal_error(m):
            self.internal.append(m.target.domain)
        if len(self.shown) < TABLE_ROWS:
            self.shown.append(replace(m, probe=Evidence(), control=Evidence()))
        if self.keep_all:
            self.kept.append(m)


def _measure(targets: Iterable[Target], total: int, options: MeasurementOptions, as_json: bool,
             concurrency: int, keep_all: bool = False) -> _Tally:
    """Runs the targets, storing each as it completes (a killed run keeps what it finished).
    Results that cannot be stored stop the run: one line, exit 3."""
    from probe.results.tables import json_line

    session = Session.open_or_exit(options, concurrency)
    _say(notices.contacts(options.controls()))
    record = session.recorder()
    tally = _Tally(keep_all)
    written = [0]  # records on disk: the store writes them in batches

    def on_written(stored: dict) -> None:
        written[0] += 1
        if as_json:  # printed once it is stored
            click.echo(json_line(stored))

    session.store.on_written = on_written
    with console.progress(sys.stderr.isatty()) as progress:
        task = progress.add_task("", total=total)

        def on_result(m: TargetMeasurement) -> None:
            record(m)
            tally.add(m)
            progress.update(task, advance=1, description=m.target.domain)

        try:
            asyncio.run(session.run(
                targets, on_result, lambda health: _say(notices.unreachable_controls(health))))
        except VantageOffline as exc:
            progress.stop()
            click.echo(f"error: this vantage point is offline ({exc}): nothing was measured",
                       err=True)
            raise SystemExit(EXIT_OFFLINE) from None
        except TargetFileError as exc:  # validated before the run: the file changed since
            progress.stop()
            click.echo(f"error: {exc} (the file changed during the run)", err=True)
            raise SystemExit(EXIT_INPUT) from None
        except StoreError as exc:
            progress.stop()
            stored = written[0]
            click.echo(f"error: results could not be stored, run stopped after {stored} of "
                       f"{total} targets (those are intact): {exc}", err=True)
            raise SystemExit(EXIT_STORE) from None
    _say(tally.notes.lines(session.last_health))
    return tally


def _say(lines: list[str]) -> None:
    for line in lines:
        click.echo(line, err=True)


def _exit_if_internal_errors(tally: _Tally) -> None:
    if tally.internal:
        names = ", ".join(tally.internal[:5]) + (" ..." if len(tally.internal) > 5 else "")
        click.echo(f"error: {len(tally.internal)} target(s) hit an internal error and were "
                   f"recorded as inconclusive (see the log): {names}", err=True)
        raise SystemExit(EXIT_INTERNAL)



@click.command()
@targets_option
@measurement_options
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Targets with connections open at once (one whose DNS queries only wait "
                   "for late, injected answers does not count).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target on stdout.")
@click.option("--pushgateway", metavar="URL", callback=http_url_param,
              help="Push metrics to this Pushgateway.")
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path),
              help="Write metrics for node_exporter's textfile collector (atomically).")
@remote_write_options
def run(target_files: tuple[Path, ...], measurement: MeasurementOptions, concurrency: int,
        as_json: bool, pushgateway: str | None, textfile: Path | None,
        remote_write: RemoteWriteConfig | None) -> None:
    """Measure every target and give each a verdict."""
    targets = load_targets_or_exit(target_files)
    tally = _measure(targets, len(targets), measurement, as_json, concurrency,
                     keep_all=bool(pushgateway or textfile or remote_write))
    if not as_json:
        from probe.results.tables import verdict_table

        out = console.stdout()
        out.print(verdict_table(tally.shown))
        if len(targets) > len(tally.shown):
            counts = ", ".join(f"{v} {n}" for v, n in sorted(tally.verdicts.items()))
            out.print(f"{len(targets)} targets ({counts}); the first {len(tally.shown)} are "
                      "shown, `probe results` lists them all")
    if pushgateway or textfile:
        from probe.monitoring import export

        if pushgateway:
            export.push(tally.kept, pushgateway, measurement.vantage_point())
        if textfile:
            export.write_textfile(tally.kept, textfile, measurement.vantage_point())
    if remote_write:
        _remote_write(tally.kept, measurement, remote_write)
    _exit_if_internal_errors(tally)


def _remote_write(kept: list[TargetMeasurement], measurement: MeasurementOptions,
                  config: RemoteWriteConfig) -> None:
    """One push of the run's metrics; a refusal or an unreachable receiver: one line, exit 6."""
    from probe.monitoring import export

    answer = asyncio.run(export.remote_write(kept, config, measurement.vantage_point()))
    if answer.outcome != "sent":
        what = f"HTTP {answer.status}" if answer.status is not None else "no answer"
        click.echo(f"error: remote write to {config.url} failed ({what}: {answer.detail}); "
                   "the results are stored", err=True)
        raise SystemExit(EXIT_EXPORT)


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
    tally = _measure([target], 1, measurement, as_json, 1, keep_all=True)
    if not as_json:
        trace(tally.kept[0], console.stdout())
    _exit_if_internal_errors(tally)
