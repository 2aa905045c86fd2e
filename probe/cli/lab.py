"""`probe lab ...`: bring the censorship lab up and down, run commands in it, run the demo."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from probe.lab import scenarios
from probe.lab.lifecycle import REPO, Lab, LabError, lab_env


def _lab(ctx: click.Context) -> Lab:
    if os.geteuid() != 0:
        raise click.ClickException("the lab needs root (CAP_NET_ADMIN) for network namespaces")
    return Lab(prefix=ctx.obj["prefix"])


def _scenario(name: str) -> scenarios.Scenario:
    try:
        return scenarios.load(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("lab")
@click.option("--prefix", default="plab", show_default=True, help="Namespace name prefix.")
@click.pass_context
def lab(ctx: click.Context, prefix: str) -> None:
    """The censorship lab: a censored network in Linux network namespaces."""
    ctx.obj = {"prefix": prefix}


@lab.command("list")
def list_() -> None:
    """The scenarios and what they show."""
    for scenario in scenarios.all_scenarios():
        click.echo(f"{scenario.name:24} {scenario.description.splitlines()[0][:90]}")


@lab.command()
@click.argument("scenario")
@click.option("--no-helper", is_flag=True, help="Do not start `probe serve`.")
@click.pass_context
def up(ctx: click.Context, scenario: str, no_helper: bool) -> None:
    """Build SCENARIO (tearing down whatever lab was up)."""
    try:
        state = _lab(ctx).up(_scenario(scenario), helper=not no_helper)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"scenario {state['scenario']} is up")
    for key in ("ca_file", "targets_file", "control_resolver", "helper_url", "system_resolver"):
        click.echo(f"  {key:17} {state[key]}")
    click.echo("  run the probe:    probe lab exec -- python -m probe run --targets "
               f"{state['targets_file']} --ca-file {state['ca_file']} --control-resolver "
               f"{state['control_resolver']}"
               + (f" --helper {state['helper_url']}" if state["helper_url"] else ""))


@lab.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Tear the lab down: processes, namespaces, files."""
    _lab(ctx).down()


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec(ctx: click.Context, command: tuple[str, ...]) -> None:  # noqa: A001 - the verb
    """Run COMMAND in the client namespace (`python` is this environment's)."""
    lab_ = _lab(ctx)
    if not lab_.state():
        raise click.ClickException("no lab is up (probe lab up SCENARIO)")
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    done = subprocess.run(["ip", "netns", "exec", lab_.names.client, *argv], env=lab_env(),
                          cwd=REPO, check=False)
    sys.exit(done.returncode)


@lab.command()
@click.argument("names", nargs=-1)
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 100))
@click.pass_context
def demo(ctx: click.Context, names: tuple[str, ...], repeat: int) -> None:
    """Run the probe in each scenario (default: all) and compare verdicts with the expected."""
    from probe.lab.demo import demo as run_demo

    chosen = [_scenario(n) for n in names] if names else scenarios.all_scenarios()
    if not run_demo(_lab(ctx), chosen, repeat, click.echo):
        sys.exit(1)
