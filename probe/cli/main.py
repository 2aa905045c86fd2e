"""The `probe` command group; every subcommand lives in its own module beside this one."""

from __future__ import annotations

import logging
import sys

import click

from probe import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probe")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Measure blocking and throttling of internet services, with controls and verdicts."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from probe.cli.config import config
    from probe.cli.daemon import daemon
    from probe.cli.lab import lab
    from probe.cli.locate import locate
    from probe.cli.measure import check, run
    from probe.cli.report import report
    from probe.cli.results import results
    from probe.cli.serve import serve
    from probe.cli.targets import targets
    from probe.cli.upload import upload

    for command in (run, check, results, report, serve, daemon, lab, config, targets, upload,
                    locate):
        main.add_command(command)


_register()
