"""`probe serve`: run the helper server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click

from probe.cli.config import config_option
from probe.cli.options import check_ca_file
from probe.model import Settings
from probe.server.app import ServerConfig, server_ssl_context, start
from probe.server.collector import CollectorConfig, CollectorError, Tokens
from probe.server.loop import install as install_loop_handler
from probe.server.loop import lean
from probe.server.outside import Policy


def _check_resolver(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    from probe.measure.dns import parse_resolver

    try:
        parse_resolver(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


async def _serve(config: ServerConfig, host: str, port: int, cert: str | None, key: str | None):
    install_loop_handler()  # a client's reset is a debug line, not a traceback
    lean()  # small TLS read buffers: memory per connection
    context = server_ssl_context(cert, key) if cert and key else None
    runner, bound = await start(config, host, port, context)
    scheme = "https" if context else "http"
    click.echo(f"probe helper listening on {scheme}://{host}:{bound}/", err=True)
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        await runner.cleanup()


@click.command("serve")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="Certificate chain (PEM).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="Private key (PEM).")
@click.option("--token", envvar="PROBE_HELPER_TOKEN", metavar="TOKEN",
              help="Require this bearer token for control requests (or PROBE_HELPER_TOKEN).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), callback=check_ca_file,
              help="Extra CA (PEM) trusted by the helper's own TLS and HTTP measurements.")
@click.option("--resolver", default="system", show_default=True, callback=_check_resolver,
              help="Resolver for the helper's DNS: system, udp://IP[:PORT], tls://IP, https://...")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 120),
              help="Seconds per operation.")
@click.option("--deadline", type=click.FloatRange(0.5, 600),
              help="Seconds per control request in all (default 4 x --timeout).")
@click.option("--max-concurrency", default=16, show_default=True, type=click.IntRange(1, 1024))
@click.option("--max-addresses", default=8, show_default=True, type=click.IntRange(1, 16))
@click.option("--allow-private-addresses", is_flag=True,
              help="Let requests reach loopback/private addresses (labs only: an SSRF risk).")
@click.option("--insecure-http", is_flag=True, help="Serve plain HTTP without --cert/--key (tests).")
@click.option("--collector", "collector_dir", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="Also collect vantages' results into DIR (docs/collector.md).")
@click.option("--collector-tokens", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="The collector's tokens: `VANTAGE TOKEN` per line.")
def serve(
    host: str, port: int, cert: str | None, key: str | None, token: str | None,
    ca_file: str | None, resolver: str, timeout: float, deadline: float | None,
    max_concurrency: int, max_addresses: int, allow_private_addresses: bool, insecure_http: bool,
    collector_dir: Path | None, collector_tokens: Path | None,
) -> None:
    """Serve control measurements and bulk downloads to probes (and, with --collector, collect
    their results)."""
    if bool(cert) != bool(key):
        raise click.UsageError("--cert and --key go together")
    if bool(collector_dir) != bool(collector_tokens):
        raise click.UsageError("--collector and --collector-tokens go together")
    if not cert and not insecure_http:
        raise click.UsageError("give --cert and --key, or --insecure-http for plain HTTP")
    config = ServerConfig(
        settings=Settings(timeout=timeout, ca_file=ca_file),
        policy=Policy(resolver, max_addresses, allow_private_addresses),
        token=token or None,
        max_concurrency=max_concurrency,
        deadline=deadline,
        collector=_collector(collector_dir, collector_tokens),
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a foreground helper stops
            asyncio.run(_serve(config, host, port, cert, key))
    except CollectorError as exc:  # the folder is opened as the server starts
        raise click.BadParameter(str(exc), param_hint="--collector") from None
    except OSError as exc:  # the listening socket: address in use, or not ours to bind
        raise click.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                 param_hint="--port") from None


def _collector(out_dir: Path | None, tokens: Path | None) -> CollectorConfig | None:
    if out_dir is None or tokens is None:
        return None
    try:
        return CollectorConfig(out_dir, Tokens.load(tokens))
    except CollectorError as exc:
        raise click.BadParameter(str(exc), param_hint="--collector-tokens") from None


