"""Where the commands print: tables on stdout, a progress bar on stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def stdout() -> Console:
    """Tables on stdout; piped or captured, wide enough that no cell is cut (`| grep` works)."""
    return Console(width=None if sys.stdout.isatty() else 200)


def progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True), disable=not enabled, transient=True,
    )
