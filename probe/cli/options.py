"""Options shared by `probe run`, `probe check` and `probe daemon`, gathered into one typed value.

Input is validated here, before anything is measured: a bad value is a one-line error naming
the option (or the file and line) and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from probe.model import Settings, Target, Vantage
from probe.runner import RunPlan


@dataclass(frozen=True)
class MeasurementOptions:
    """What every measuring command was asked for (one field per option below)."""

    control_resolver: str | None = None
    helper_url: str | None = None
    helper_token: str | None = None
    th_urls: tuple[str, ...] = ()
    ca_file: str | None = None
    timeout: float = 10.0
    no_throughput: bool = False
    vantage: str = "unnamed"
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    out_dir: Path = Path("results")

    def vantage_point(self) -> Vantage:
        return Vantage(name=self.vantage, asn=self.probe_asn, cc=self.probe_cc.upper())

    def plan(self, concurrency: int = 8) -> RunPlan:
        return RunPlan(
            settings=Settings(timeout=self.timeout, ca_file=self.ca_file),
            control_resolver=self.control_resolver,
            helper_url=self.helper_url,
            helper_token=self.helper_token,
            th_urls=self.th_urls,
            concurrency=concurrency,
            throughput=not self.no_throughput,
        )


def _check_resolver(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from probe.measure.dns import parse_resolver

    try:
        parse_resolver(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_helper(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise click.BadParameter(f"{value!r} is not an http(s) URL")
    return value if value is None or value.endswith("/") else value + "/"


def _check_th(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]):
    for url in value:
        if not url.startswith(("https://", "http://")) or not urlsplit(url).hostname:
            raise click.BadParameter(f"{url!r} is not an http(s) URL")
    return tuple(value)


def _check_asn(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not (value.startswith("AS") and value[2:].isdigit()):
        raise click.BadParameter(f"{value!r} is not of the form AS1234")
    return value


_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--control-resolver", callback=_check_resolver, metavar="URL",
                 help="Trusted resolver: https://HOST/dns-query, tls://IP[:PORT] or udp://IP[:PORT]."),
    click.option("--helper", "helper_url", callback=_check_helper, metavar="URL",
                 help="Helper server (`probe serve`) outside the censored network."),
    click.option("--th", "th_urls", multiple=True, callback=_check_th, metavar="URL",
                 help="OONI-protocol test helper, asked when there is no --helper; repeatable, "
                      "tried in order."),
    click.option("--helper-token", envvar="PROBE_HELPER_TOKEN", metavar="TOKEN",
                 help="Bearer token for the helper (or PROBE_HELPER_TOKEN)."),
    click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
                 help="An extra CA to trust (e.g. the lab's)."),
    click.option("--timeout", type=click.FloatRange(0.1, 120), default=10.0, show_default=True,
                 help="Seconds per network operation."),
    click.option("--no-throughput", is_flag=True, help="Skip throughput (throttling) tests."),
    click.option("--vantage", default="unnamed", show_default=True,
                 help="Name of this vantage point."),
    click.option("--probe-asn", default="AS0", callback=_check_asn, show_default=True),
    click.option("--probe-cc", default="ZZ", show_default=True, help="Country code."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                 default=Path("results"), show_default=True, help="Results directory."),
]
_FIELDS = tuple(f.name for f in dataclasses.fields(MeasurementOptions))


def measurement_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the options every measuring command takes; the command gets them as one
    `measurement: MeasurementOptions` argument."""

    @functools.wraps(command)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        measurement = MeasurementOptions(**{name: kwargs.pop(name) for name in _FIELDS})
        return command(*args, measurement=measurement, **kwargs)

    return functools.reduce(lambda f, option: option(f), reversed(_OPTIONS), gathered)


def targets_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--targets", "target_files", multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Target list (YAML or Citizen Lab CSV); repeatable. Default: the shipped lists.",
    )(command)


def load_targets_or_exit(files: tuple[Path, ...]) -> list[Target]:
    from probe.targets import TargetFileError, default_target_files, load_targets

    try:
        return load_targets(list(files) or default_target_files())
    except TargetFileError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
