"""`--remote-write URL` and its credentials, for `probe run` and `probe daemon`, gathered into one
`RemoteWriteConfig` (or None) handed to the command as `remote_write`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from probe.cli.options import check_ca_file, http_url_param
from probe.monitoring.remote_write import RemoteWriteConfig

EXIT_EXPORT = 6  # `probe run`: results stored, but the metrics could not be pushed
_FIELDS = ("remote_write_url", "remote_write_token", "remote_write_user",
           "remote_write_password", "remote_write_ca")



_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--remote-write", "remote_write_url", metavar="URL", callback=http_url_param,
                 help="Push metrics to this Prometheus remote-write endpoint (e.g. "
                 "https://prometheus.example/api/v1/write)."),
    click.option("--remote-write-token", envvar="PROBE_REMOTE_WRITE_TOKEN", metavar="TOKEN",
                 help="Bearer token for --remote-write (or PROBE_REMOTE_WRITE_TOKEN)."),
    click.option("--remote-write-user", metavar="USER",
                 help="Basic-auth user for --remote-write (with --remote-write-password)."),
    click.option("--remote-write-password", envvar="PROBE_REMOTE_WRITE_PASSWORD",
                 metavar="PASSWORD",
                 help="Basic-auth password (or PROBE_REMOTE_WRITE_PASSWORD)."),
    click.option("--remote-write-ca", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
                 callback=check_ca_file,
                 help="Trust only this CA for an https --remote-write URL."),
]


def _on_command_line(name: str) -> bool:
    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


def remote_write_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the options; the command gets `remote_write: RemoteWriteConfig | None` (plus
    `interval` for the daemon, set by the caller with dataclasses.replace)."""

    @functools.wraps(command)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        url, token, user, password, ca = (kwargs.pop(name) for name in _FIELDS)
        config = None
        if url is not None:
            try:
                config = RemoteWriteConfig(url, token=token, user=user, password=password,
                                           ca_file=ca)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--remote-write-*") from None
        elif any(_on_command_line(name) for name in _FIELDS[1:]):  # the environment may
            raise click.BadParameter("given without --remote-write URL",  # serve other runs
                                     param_hint="--remote-write-*")
        return command(*args, remote_write=config, **kwargs)

    return functools.reduce(lambda f, option: option(f), reversed(_OPTIONS), gathered)
