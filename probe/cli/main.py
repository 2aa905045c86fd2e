"""The `probe` command group; every subcommand lives in its own module beside this one."""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import sys

import click

from probe import __version__

# name -> "module:attribute". Loaded when that command runs or help lists it: `probe run` never
# imports what the daemon, the helper, the lab or the report need (~3 MB and ~0.3 s of start-up).
_COMMANDS = {
    "check": "probe.cli.measure:check",
    "config": "probe.cli.config:config",
    "daemon": "probe.cli.daemon:daemon",
    "lab": "probe.cli.lab:lab",
    "locate": "probe.cli.locate:locate",
    "report": "probe.cli.report:report",
    "results": "probe.cli.results:results",
    "run": "probe.cli.measure:run",
    "serve": "probe.cli.serve:serve",
    "targets": "probe.cli.targets:targets",
    "upload": "probe.cli.upload:upload",
}


# Young objects are collected every this many allocations (CPython's default, 700, had a run of
# 1,000 targets spend ~7 % of its CPU collecting: 690 collections, 5 of the whole heap).
GC_THRESHOLD = (10_000, 10, 10)


def command(name: str) -> click.Command | None:
    """The subcommand called `name`, its module imported now."""
    target = _COMMANDS.get(name)
    if target is None:
        return None
    module, attribute = target.split(":")
    found = getattr(importlib.import_module(module), attribute)
    _freeze_once()
    return found


@functools.cache
def _freeze_once() -> None:
    """What is loaded by the time a command is found (modules, their tables) lives as long as
    the process: out of the collector's sight, a full collection walks only what the command
    makes. Once: a process that runs several commands (the tests) freezes nothing later."""
    gc.freeze()


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return command(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probe")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Measure blocking and throttling of internet services, with controls and verdicts."""
    gc.set_threshold(*GC_THRESHOLD)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
