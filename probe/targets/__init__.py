"""Target lists: our YAML files and Citizen Lab test-list CSVs, validated strictly and streamed.

YAML, a mapping (or a bare list of targets):

    category: GRP                 # default for the targets below
    control: www.example.com      # default control SNI/domain
    description: free text
    targets:
      - twitter.com               # a bare domain, or a mapping:
      - domain: api.twitter.com
        url: https://api.twitter.com/1.1/   # default https://<domain>/
        category: GRP
        control: www.example.com
        throughput_url: https://pbs.twimg.com/media/x.jpg   # a real object, for the direct
        control_throughput_url: https://www.example.com/big.bin  # throughput test (also top level)

CSV (Citizen Lab's test lists): the header
`url,category_code,category_description,date_added,source,notes`, one URL a row. A URL's host
may be an address (measured without a DNS step) or a name with a trailing dot (dropped).

A file that cannot be used stops loading (nothing is measured from a broken list) with a
TargetFileError whose str is one line, "FILE:LINE: message": a wrong header (Citizen Lab's
legend files), text that is not UTF-8 or not CSV, any error in a YAML file. A CSV row that
cannot be measured is skipped with a RowError (same shape) handed to `on_skip`; `strict` raises
it instead. Duplicates are by URL (one domain may list several): the same URL twice in one YAML
file is an error (a typo, most likely); in a CSV (public lists repeat themselves) and across
files the first occurrence wins and later ones are dropped.

Lists are streamed, never held: `check_targets` reads every file once keeping nothing but the
URLs seen (in a temporary SQLite file) and the first error, then `iter_targets` reads them
again target by target. A 1 M-row list loads in the memory of a 1 k-row one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from probe.model import Target
from probe.targets.errors import OnSkip, RowError, TargetFileError
from probe.targets.fields import make_target, parse_domain
from probe.targets.formats import CSV_HEADER, read

__all__ = ["CSV_HEADER", "FileTally", "OnSkip", "RowError", "TargetFileError", "TargetFiles",
           "check_targets", "default_target_files", "iter_targets", "load_targets",
           "make_target", "open_targets", "parse_domain"]


@dataclass
class FileTally:
    """What one file gave: new targets, duplicates of earlier ones, rows skipped."""

    path: Path
    targets: int = 0
    duplicates: int = 0
    skipped: int = 0


def default_target_files() -> list[Path]:
    """The shipped lists (probe/data/targets, a link to targets/ in a checkout)."""
    folder = Path(__file__).resolve().parent.parent / "data" / "targets"
    return sorted(folder.glob("*.yaml"))


@dataclass(frozen=True)
class TargetFiles:
    """Validated target files, read again at each iteration (each of a daemon's runs)."""

    paths: tuple[Path, ...]
    count: int  # distinct targets, found by the validating pass
    skipped: int = 0  # rows skipped by the validating pass (each warned about then)

    def __iter__(self) -> Iterator[Target]:
        return iter_targets(self.paths, on_skip=_ignore)  # warned once, by the first pass

    def __len__(self) -> int:
        return self.count


def _ignore(_: RowError) -> None:
    pass


def open_targets(paths: Iterable[Path | str], strict: bool = False,
                 on_skip: OnSkip | None = None) -> TargetFiles:
    """Validates the files (one streaming pass, nothing kept); raises TargetFileError. Rows
    that cannot be measured go to `on_skip` (or raise, if `strict`)."""
    paths = tuple(map(Path, paths))
    tallies: list[FileTally] = []  # one per file
    count = sum(1 for _ in iter_targets(paths, None if strict else on_skip or _ignore,
                                        tallies.append))
    return TargetFiles(paths, count, sum(t.skipped for t in tallies))


def check_targets(paths: Iterable[Path | str], strict: bool = False) -> int:
    """Validates every file in one streaming pass (nothing kept); the number of targets."""
    return open_targets(paths, strict).count


def load_targets(paths: Iterable[Path | str], strict: bool = False) -> list[Target]:
    """Every target of every file, in a list (small lists; large ones: `iter_targets`)."""
    paths = list(paths)
    check_targets(paths, strict)  # nothing loads if one file is bad
    return list(iter_targets(paths, None if strict else _ignore))


def iter_targets(paths: Iterable[Path | str], on_skip: OnSkip | None = None,
                 on_file: Callable[[FileTally], None] | None = None) -> Iterator[Target]:
    """Every target of every file, in order, first occurrence of a URL winning. A CSV row that
    cannot be measured goes to `on_skip` (None: it raises). An error is raised when it is met:
    call `check_targets` first to measure nothing from a bad list."""
    with _Seen() as seen:
        for index, path in enumerate(map(Path, paths)):
            tally = FileTally(path)
            skip = on_skip and _counting(tally, on_skip)
            for target, line in read(path, skip):
                first = seen.first(target.url, index, line)
                if first is None:
                    tally.targets += 1
                    yield target
                elif first[0] == index and path.suffix.lower() != ".csv":
                    raise TargetFileError(path, line, f"duplicate URL {target.url} "
                                          f"(first on line {first[1]})")
                else:
                    tally.duplicates += 1  # still a target: the file is not empty
            if tally.targets + tally.duplicates == 0:
                rows = "1 row" if tally.skipped == 1 else f"{tally.skipped} rows"
                why = f" ({rows} skipped)" if tally.skipped else ""
                raise TargetFileError(path, 1, "no targets" + why)
            if on_file:
                on_file(tally)


def _counting(tally: FileTally, on_skip: OnSkip) -> OnSkip:
    def skip(error: RowError) -> None:
        tally.skipped += 1
        on_skip(error)
    return skip


class _Seen:
    """The URLs met so far, with their file and line, in a temporary on-disk SQLite database
    (its page cache is bounded): de-duplicating a 1 M-row list keeps no 1 M objects."""

    def __enter__(self) -> _Seen:
        # "": a private temporary file, deleted on close; a generator left half-read may be
        # finalised by the garbage collector in another thread, hence check_same_thread=False
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute("CREATE TABLE seen (url TEXT PRIMARY KEY, file INT, line INT)"
                         " WITHOUT ROWID")
        return self

    def __exit__(self, *_: object) -> None:
        self._db.close()

    def first(self, url: str, file: int, line: int) -> tuple[int, int] | None:
        """Where `url` was first seen, or None (and it is recorded as seen here)."""
        row = self._db.execute("SELECT file, line FROM seen WHERE url = ?", (url,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO seen VALUES (?, ?, ?)", (url, file, line))
        return row
