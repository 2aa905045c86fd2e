"""`probe targets check FILE...`: validate target lists without measuring anything.

Each file is checked on its own (duplicates within it, not across files) and streamed as a run
streams it. Per file, one line: the targets found and the rows skipped, then at most SHOWN of
those rows with their reason. A refused file is one `error:` line. Exit 0, or 2 when a file is
refused (with --strict: also when a row is skipped).
"""

from __future__ import annotations

from pathlib import Path

import click

from probe.targets import FileTally, RowError, TargetFileError, iter_targets

SHOWN = 10  # skipped rows named per file


@click.group()
def targets() -> None:
    """Work with target lists (YAML, Citizen Lab CSV)."""


@targets.command("check")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="A row that cannot be measured refuses its file.")
def check(files: tuple[Path, ...], strict: bool) -> None:
    """Validate target lists: targets found and rows skipped, per file (nothing is measured)."""
    refused = found = skipped = 0
    for path in files:
        try:
            tally = _check_file(path, strict)
        except TargetFileError as exc:
            click.echo(f"error: {exc}", err=True)
            refused += 1
            continue
        found, skipped = found + tally.targets, skipped + tally.skipped
    if len(files) > 1:
        click.echo(f"{count(len(files), 'file')}: {count(found, 'target')}, "
                   f"{count(skipped, 'row')} skipped, {count(refused, 'file')} refused")
    if refused:
        raise SystemExit(2)


def count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_file(path: Path, strict: bool) -> FileTally:
    """Reads the file once, printing its summary line and the first skipped rows."""
    rows: list[RowError] = []  # the first SHOWN only: output and memory stay bounded
    tallies: list[FileTally] = []

    def skip(error: RowError) -> None:
        if len(rows) < SHOWN:
            rows.append(error)

    for _ in iter_targets([path], None if strict else skip, tallies.append):
        pass
    tally = tallies[0]
    duplicates = f" ({count(tally.duplicates, 'duplicate')} dropped)" if tally.duplicates else ""
    click.echo(f"{path}: {count(tally.targets, 'target')}{duplicates}, "
               f"{count(tally.skipped, 'row')} skipped")
    for row in rows:
        click.echo(f"  {row.path}:{row.line}: {row.message}")
    if tally.skipped > len(rows):
        click.echo(f"  ... and {tally.skipped - len(rows)} more")
    return tally
