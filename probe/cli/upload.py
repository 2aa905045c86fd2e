"""`probe upload`: send this vantage's results to a collector; the options `probe daemon` shares
(probe.results.upload does the work, docs/collector.md the protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from probe.cli.config import config_option
from probe.cli.options import check_ca_file, http_url_param

if TYPE_CHECKING:
    from probe.results.upload import UploadSettings

TOKEN_ENV = "PROBE_COLLECTOR_TOKEN"
EXIT_INPUT, EXIT_UNREACHABLE = 2, 4



def collector_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--collector", callback=http_url_param, metavar="URL",
                        help="Collector (`probe serve --collector`) to upload results to.")(command)


def settings_or_exit(collector: str, token: str | None,
                     ca_file: str | None) -> UploadSettings:
    """UploadSettings, or one line and exit 2 when the token is missing."""
    from probe.results.upload import UploadSettings

    if not token:
        click.echo(f"error: --collector needs a token (--token, {TOKEN_ENV} or [upload] token)",
                   err=True)
        raise SystemExit(EXIT_INPUT)
    host = urlsplit(collector).hostname or ""
    if collector.startswith("http:") and host not in ("localhost", "127.0.0.1", "::1"):
        click.echo(f"warning: {collector} is plain HTTP: the token and the results travel in "
                   "clear (use https)", err=True)
    return UploadSettings(collector=collector, token=token, ca_file=ca_file)


@click.command()
@config_option
@collector_option
@click.option("--token", "collector_token", envvar=TOKEN_ENV, metavar="TOKEN",
              help=f"This vantage's collector token (or {TOKEN_ENV}).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("results"), show_default=True, help="Results directory.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              callback=check_ca_file, help="An extra CA to trust (the collector's).")
def upload(collector: str | None, collector_token: str | None, out_dir: Path,
           ca_file: str | None) -> None:
    """Send the measurements the collector has not acknowledged yet (resumes where the last
    upload stopped). Exit 0: all sent; 2: refused (option, token); 4: collector unreachable."""
    from probe.results.upload import upload as run_upload

    if collector is None:
        click.echo("error: give --collector URL (or [upload] collector in the config file)",
                   err=True)
        raise SystemExit(EXIT_INPUT)
    if not out_dir.is_dir():
        click.echo(f"error: --out: no results folder {out_dir}", err=True)
        raise SystemExit(EXIT_INPUT)
    report = asyncio.run(run_upload(out_dir, settings_or_exit(collector, collector_token,
                                                               ca_file)))
    click.echo(f"probe: {report.line()}", err=True)
    if report.failure:
        raise SystemExit(EXIT_INPUT if report.final else EXIT_UNREACHABLE)
