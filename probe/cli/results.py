"""`probe results`: past runs and their verdicts, read from the results folder."""

from __future__ import annotations

from pathlib import Path

import click

from probe.cli import console


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True)
@click.option("--runs", "limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--report-id", help="Show the verdicts of this run (default: the latest).")
def results(out_dir: Path, limit: int, report_id: str | None) -> None:
    """Past runs, and the verdicts of the latest (or a chosen) run, as tables."""
    from probe.results.store import Store, StoreError
    from probe.results.tables import latest_table, runs_table

    try:
        store = Store(out_dir, vantage="")
    except StoreError as exc:
        click.echo(f"error: --out: {exc}", err=True)
        raise SystemExit(2) from None
    out = console.stdout()
    out.print(runs_table(store.runs(limit)))
    out.print(latest_table(store.latest(report_id)))
