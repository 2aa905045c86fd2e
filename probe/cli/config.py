"""The config file in the CLI: `--config` feeds click's default_map (so flags and the environment
still win), every value is checked by its option's own type and callback, and `probe config`
prints the effective configuration with the source of each value."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from probe.addresses import host_port
from probe.config import (
    COMMANDS,
    KEYS,
    ConfigError,
    ConfigFile,
    Entry,
    Key,
    find,
    load,
    search_path,
)

# in ctx.meta (shared by a context and its children): the file (or None) and its option values
_META = "probe.config"
SHOWN = ("run", "daemon", "serve")  # `check` takes what `run` takes, less targets


def _params(name: str) -> dict[str, click.Parameter]:
    from probe.cli.main import command

    found = command(name)
    assert found is not None, name  # SHOWN names commands that exist
    return {p.name: p for p in found.params if p.name}


def _for_option(entry: Entry, param: click.Parameter) -> Any:
    """The file's value as the option expects it (inverted flag, one value or several)."""
    value = entry.value
    if entry.key.invert:
        return not value
    if isinstance(value, list) and not param.multiple:
        if not value:
            return None
        if len(value) > 1:
            raise ValueError(f"this version takes one value here, not {len(value)}")
        return value[0]
    return value


def option_values(config: ConfigFile) -> dict[str, dict[str, Any]]:
    """The file's values for each command's options, each checked by that option's own type and
    callback. Every command's are checked, so a bad [serve] value stops `probe run` too."""
    values: dict[str, dict[str, Any]] = {name: {} for name in COMMANDS}
    for entry in config.entries:
        for name in entry.key.commands:
            param = _params(name).get(entry.key.param)
            if param is None:  # a key for an option this version lacks: kept, not used
                continue
            try:
                value = _for_option(entry, param)
                param.process_value(click.Context(click.Command(name), info_name=name), value)
            except (ValueError, click.BadParameter) as exc:
                message = exc.message if isinstance(exc, click.BadParameter) else str(exc)
                raise ConfigError(config.path, entry.line, entry.key.dotted, message) from None
            values[name][entry.key.param] = value
    return values


def loaded(ctx: click.Context, given: Path | None) -> ConfigFile | None:
    """The file named by --config, else the one already loaded for this invocation, else the
    first found on the search path; on a bad file, one line on stderr and exit 2."""
    if given is None and _META in ctx.meta:
        return ctx.meta[_META]
    try:
        path = given or find()
        config = load(path) if path else None
        values = option_values(config) if config else {}
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        ctx.exit(2)
    ctx.meta[_META], ctx.meta[_META + ".values"] = config, values
    return config


def _apply(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """--config's callback: the file's values become the command's defaults."""
    loaded(ctx, value)
    defaults = ctx.meta[_META + ".values"].get(ctx.info_name, {})
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def config_option(command: Any) -> Any:
    """`--config FILE`, processed before every other option so the file's values are their
    defaults."""
    return click.option(
        "--config", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
        is_eager=True, expose_value=False, callback=_apply,
        help="Config file (TOML). Default: the first of "
             + ", ".join(str(p) for p in search_path()) + ". Flags override it.",
    )(command)


def _plain(key: Key, value: Any) -> Any:
    """An option's processed value back in the file's terms."""
    if isinstance(value, tuple) and key.kind == "string":  # --listen: (host, port)
        return host_port(*value)
    if key.invert:
        return not value
    if key.kind.endswith("path") and value is not None:  # absolute: as true in any directory
        return os.path.abspath(value)
    if isinstance(value, (tuple, list)):
        return [os.path.abspath(v) if key.kind == "list of paths" else str(v) for v in value]
    if key.kind.startswith("list") and value is not None:
        return [value]
    return value


def _source(ctx: click.Context, name: str, key: Key, config: ConfigFile | None) -> str:
    source = ctx.get_parameter_source(name)
    if source is ParameterSource.DEFAULT_MAP and config is not None:
        entry = config.get(key.dotted)
        return f"{config.path}:{entry.line}" if entry else "file"
    return {ParameterSource.COMMANDLINE: "flag", ParameterSource.ENVIRONMENT: "environment"}.get(
        source, "default")  # type: ignore[arg-type]


def effective(ctx: click.Context, commands: tuple[str, ...],
              args: list[str]) -> list[tuple[Key, Any, str]]:
    """(key, value, source) for every key of these commands, as the command would see it."""
    from probe.cli.main import command

    contexts = {name: command(name).make_context(name, list(args), parent=ctx)  # type: ignore[union-attr]
                for name in commands}
    config = ctx.meta[_META]  # after ARGS: they may name another --config
    rows = []
    for key in KEYS:
        users = [n for n in commands if n in key.commands and key.param in _params(n)]
        entry = config.get(key.dotted) if config else None
        if users:
            sub = contexts[users[0]]
            rows.append((key, _plain(key, sub.params[key.param]),
                         _source(sub, key.param, key, config)))
        elif entry and set(commands) & set(key.commands):
            rows.append((key, entry.value, f"{config.path}:{entry.line} (not used by this version)"))
    return rows


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def render(rows: list[tuple[Key, Any, str]], as_toml: bool) -> str:
    lines, section = [], None
    width = max((len(key.dotted) for key, _, _ in rows), default=0)
    for key, value, source in rows:
        shown = "***" if key.secret and value else value
        if not as_toml:
            text = "-" if shown is None else _toml(shown)
            lines.append(f"{key.dotted:<{width}}  {text:<30}  {source}")
            continue
        if key.section != section:
            lines += [""] if section else []
            lines.append(f"[{key.section}]")
            section = key.section
        if shown is None or shown == "***":  # commented out: the output stays a valid file
            assignment = f"# {key.name} = {'(hidden)' if shown else '(unset)'}"
        else:
            assignment = f"{key.name} = {_toml(shown)}"
        lines.append(f"{assignment}  # {source}")
    return "\n".join(lines)


@click.command("config", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Config file (default: the first found on the search path).")
@click.option("--toml", "as_toml", is_flag=True, help="Print as a config file (TOML).")
@click.argument("command", required=False, type=click.Choice(COMMANDS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def config(config_path: Path | None, as_toml: bool, command: str | None,
           args: tuple[str, ...]) -> None:
    """Print the effective configuration and where each value came from.

    With COMMAND and its ARGS (`probe config run --timeout 5`), for that command line."""
    ctx = click.get_current_context()
    loaded(ctx, config_path)
    rows = effective(ctx, (command,) if command else SHOWN, list(args))
    used = ctx.meta[_META]
    click.echo(f"# config file: {used.path}" if used else "# no config file (searched "
               + ", ".join(str(p) for p in search_path()) + ")")
    click.echo(render(rows, as_toml))
