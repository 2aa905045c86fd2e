"""Options shared by `probe run`, `probe check` and `probe daemon`, gathered into one typed value.

Input is validated here, before anything is measured: a bad value is a one-line error naming
the option (or the file and line) and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from probe.cli.config import config_option
from probe.controls import Controls, choose
from probe.model import Settings, Vantage
from probe.runner import RunPlan

if TYPE_CHECKING:
    from probe.targets import TargetFiles


@dataclass(frozen=True)
class MeasurementOptions:
    """What every measuring command was asked for (one field per option below)."""

    control_resolvers: tuple[str, ...] = ()
    helper_url: str | None = None
    helper_token: str | None = None
    th_urls: tuple[str, ...] = ()
    no_third_party: bool = False
    ca_file: str | None = None
    timeout: float = 10.0
    no_throughput: bool = False
    no_locate: bool = False
    throughput_bytes: int = 48 << 20
    data_budget: int = 256 << 20
    vantage: str = "unnamed"
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    out_dir: Path = Path("results")

    def vantage_point(self) -> Vantage:
        return Vantage(name=self.vantage, asn=self.probe_asn, cc=self.probe_cc.upper())

    def controls(self) -> Controls:
        return choose(self.control_resolvers, self.helper_url, self.th_urls,
                      third_party=not self.no_third_party)

    def plan(self, concurrency: int = 8) -> RunPlan:
        controls = self.controls()
        return RunPlan(
            settings=Settings(timeout=self.timeout, ca_file=self.ca_file),
            control_resolvers=controls.resolvers,
            helper_url=controls.helper_url,
            helper_token=self.helper_token,
            th_urls=controls.th_urls,
            throughput_bytes=self.throughput_bytes,
            data_budget=self.data_budget,
            concurrency=concurrency,
            throughput=not self.no_throughput,
            locate=not self.no_locate,
        )


def _check_resolvers(_ctx: click.Context, _param: click.Parameter,
                     values: tuple[str, ...]) -> tuple[str, ...]:
    from probe.measure.dns import parse_resolver

    for value in values:
        try:
            parse_resolver(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return values


def http_url_param(_ctx: click.Context | None, _param: click.Parameter | None,
                   value: str | None) -> str | None:
    """A click callback: the http(s) URL as given, or a one-line BadParameter saying why not."""
    if value is not None:
        try:
            check_http_url(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _http_url(value: str) -> str:
    http_url_param(None, None, value)
    return value if value.endswith("/") else value + "/"


def check_http_url(value: str) -> str:
    """An http(s) URL with a host and a usable port; ValueError says what is wrong."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"{value!r} is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not parts.hostname or port == 0:
        raise ValueError(f"{value!r} has no host" if not parts.hostname
                         else f"{value!r} has an invalid port (want 1-65535)")
    return value


def _check_helper(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else _http_url(value)


def _check_helpers(_ctx: click.Context, _param: click.Parameter,
                   values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_http_url(v) for v in values)


def check_ca_file(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Loaded now, so a file that is not PEM stops here rather than at the first handshake."""
    if value is not None:
        try:
            # a bare context: the system store is loaded where it is used (~40 ms each time)
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise click.BadParameter(f"{value!r} is not a PEM CA certificate ({exc})") from None
    return value


def _check_cc(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise click.BadParameter(f"{value!r} is not a two-letter country code (like RU)")
    return value.upper()


def _check_asn(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not (value.startswith("AS") and value[2:].isdigit()):
        raise click.BadParameter(f"{value!r} is not of the form AS1234")
    return value


_OPTIONS: list[Callable[[Any], Any]] = [
    config_option,
    click.option("--control-resolver", "control_resolvers", multiple=True,
                 callback=_check_resolvers, metavar="URL",
                 help="Trusted resolver: https://HOST/dns-query, tls://IP[:PORT] or udp://IP[:PORT];"
                 " repeatable (default: public DoH resolvers of three operators)."),
    click.option("--helper", "helper_url", callback=_check_helper, metavar="URL",
                 help="Helper server (`probe serve`) outside the censored network."),
    click.option("--th", "th_urls", multiple=True, callback=_check_helpers, metavar="URL",
                 help="OONI-protocol test helper, repeatable, tried in order (default without "
                 "--helper: OONI's public test helpers)."),
    click.option("--no-third-party", is_flag=True, envvar="PROBE_NO_THIRD_PARTY",
                 help="Use no public control by default (resolvers, OONI test helpers): only "
                 "the controls given here (or PROBE_NO_THIRD_PARTY=1)."),
    click.option("--helper-token", envvar="PROBE_HELPER_TOKEN", metavar="TOKEN",
                 help="Bearer token for the helper (or PROBE_HELPER_TOKEN)."),
    click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
                 callback=check_ca_file,
                 help="An extra CA to trust (e.g. the lab's)."),
    click.option("--timeout", type=click.FloatRange(0.1, 120), default=10.0, show_default=True,
                 help="Seconds per network operation."),
    click.option("--no-throughput", is_flag=True, help="Skip throughput (throttling) tests."),
    click.option("--no-locate", is_flag=True, help="Do not locate the censor of blocked or "
                 "throttled targets (TTL-limited probes; done only with raw-socket rights)."),
    click.option("--throughput-bytes", type=click.IntRange(64 << 10, 1 << 30), default=48 << 20,
                 show_default=True, help="Bytes per target for the full throttling A/B (suspects "
                 "and media hosts; every other target gets a 64 KiB screen)."),
    click.option("--data-budget", type=click.IntRange(1 << 20, 1 << 40), default=256 << 20,
                 show_default=True, help="Bytes per run for all throughput tests together; "
                 "targets past it are reported as not measured."),
    click.option("--vantage", default="unnamed", show_default=True,
                 help="Name of this vantage point."),
    click.option("--probe-asn", default="AS0", callback=_check_asn, show_default=True),
    click.option("--probe-cc", default="ZZ", callback=_check_cc, show_default=True,
                 help="Country code (two letters)."),
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
    """--targets, and --strict (kept in the context for `load_targets_or_exit`: the commands
    never see it)."""
    @functools.wraps(command)
    def with_strict(*args: Any, strict: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta[_STRICT] = strict
        return command(*args, **kwargs)

    with_strict = click.option(
        "--strict", is_flag=True,
        help="Refuse a list with a row that cannot be measured (default: skip it, warning).",
    )(with_strict)
    return click.option(
        "--targets", "target_files", multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Target list (YAML or Citizen Lab CSV); repeatable. Default: the shipped lists.",
    )(with_strict)


_STRICT = "probe.strict_lists"
WARNINGS_SHOWN = 20  # skipped rows named on stderr; the summary line counts them all


def load_targets_or_exit(files: tuple[Path, ...]) -> TargetFiles:
    """The target files, validated in one streaming pass (nothing kept): they are read again
    target by target as the run goes. A bad file: one line, exit 2, nothing measured. A row
    that cannot be measured: a warning and a summary line, or (--strict) that error."""
    from probe.targets import RowError, TargetFileError, default_target_files, open_targets

    strict = click.get_current_context().meta.get(_STRICT, False)
    shown = 0

    def warn(error: RowError) -> None:
        nonlocal shown
        shown += 1
        if shown <= WARNINGS_SHOWN:
            click.echo(f"warning: {error} (skipped)", err=True)

    try:
        targets = open_targets(list(files) or default_target_files(), strict, warn)
    except TargetFileError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    if targets.skipped:
        more = f", {targets.skipped - WARNINGS_SHOWN} not shown" if shown > WARNINGS_SHOWN else ""
        rows = "1 row" if targets.skipped == 1 else f"{targets.skipped} rows"
        click.echo(f"probe: {len(targets)} targets to measure; {rows} skipped (cannot be "
                   f"measured{more}; --strict refuses them)", err=True)
    return targets
