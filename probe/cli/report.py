"""`probe report`: one run (or every run since a date) as one self-contained file."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    from probe.report.gather import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a date, 2026-11-01 or 2026-11-01T12:00"
                                 ) from None


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True, help="The results folder to read.")
@click.option("--report-id", help="Report this run (default: the latest).")
@click.option("--since", callback=_since, metavar="DATE",
              help="Report every run since DATE (UTC), with each target's verdicts over time.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: stdout).")
@click.option("--format", "form", type=click.Choice(["html", "json", "md"]),
              help="Default: from -o's suffix (.json, .md), else html.")
def report(out_dir: Path, report_id: str | None, since: datetime | None, output: Path | None,
           form: str | None) -> None:
    """A report of stored results: summary, targets table, and the evidence of every throttled
    or blocked target (with --format html: one self-contained page with figures)."""
    from probe.report.build import build
    from probe.report.gather import NothingToReport, gather
    from probe.report.render import render
    from probe.results.store import StoreError

    if report_id and since:
        raise click.UsageError("--report-id and --since exclude each other")
    try:
        stored = gather(out_dir, report_id, since)
    except (NothingToReport, StoreError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    if form is None:
        suffix = output.suffix.lower() if output else ""
        form = {".json": "json", ".md": "md", ".markdown": "md"}.get(suffix, "html")
    scope = f"since {since:%Y-%m-%d %H:%M} UTC" if since else f"run {stored[0].record['report_id']}"
    text = render(build(stored, scope, timeline=since is not None), form)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        click.echo(f"error: -o: cannot write {output}: {exc.strerror or exc}", err=True)
        raise SystemExit(2) from None
    click.echo(f"wrote {output} ({len(stored)} measurements)", err=True)
