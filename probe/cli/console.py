"""Where the commands print: tables on stdout, a progress bar on stderr. rich is loaded only
when something is drawn (a run under cron or with `--json` draws nothing: ~60 ms of start)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def stdout() -> Console:
    """Tables on stdout; piped or captured, wide enough that no cell is cut (`| grep` works)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


class _NoProgress:
    """What `progress` gives when nothing is drawn: the calls a run makes, doing nothing."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def update(self, *_: Any, **__: Any) -> None:
        return None

    def stop(self) -> None:
        return None


def progress(enabled: bool) -> Progress | _NoProgress:
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True), transient=True,
    )
