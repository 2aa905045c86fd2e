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

import csv
import ipaddress
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import yaml

from probe import yamlstream as ys
from probe.model import Target

__all__ = ["FileTally", "OnSkip", "RowError", "TargetFileError", "TargetFiles", "check_targets",
           "default_target_files", "iter_targets", "load_targets", "open_targets", "parse_domain"]

CSV_HEADER = ["url", "category_code", "category_description", "date_added", "source", "notes"]
TOP_KEYS = frozenset({"category", "control", "control_throughput_url", "description", "targets"})
TARGET_KEYS = frozenset({"domain", "url", "category", "control", "throughput_url",
                         "control_throughput_url"})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
_UNUSABLE = re.compile(r"[\x00-\x20\x7f]")  # whitespace and control characters inside a URL


class TargetFileError(ValueError):
    """A target file that cannot be used; str(err) is "FILE:LINE: message"."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


class RowError(TargetFileError):
    """One CSV row that cannot be measured: skipped with a warning, unless loading is strict."""


OnSkip = Callable[[RowError], None]


@dataclass
class FileTally:
    """What one file gave: new targets, duplicates of earlier ones, rows skipped."""

    path: Path
    targets: int = 0
    duplicates: int = 0
    skipped: int = 0


def default_target_files() -> list[Path]:
    """The shipped lists (probe/data/targets, a link to targets/ in a checkout)."""
    folder = Path(__file__).resolve().parent / "data" / "targets"
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
            for target, line in _load(path, skip):
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
        self._db = sqlite3.connect("")  # "": a private temporary file, deleted on close
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


def parse_domain(text: str) -> str:
    """A lower-case host name (a trailing dot dropped); raises ValueError with the reason."""
    domain = text.strip().lower().removesuffix(".")
    if not domain or len(domain) > 253:
        raise ValueError(f"invalid domain {text!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain {text!r}") from exc
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid domain {text!r}")
    if labels[-1].isdigit():
        raise ValueError(f"invalid domain {text!r} (an address, not a name)")
    return domain


def _url(text: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    return _url_and_domain(text, schemes)[0]


def _url_and_domain(text: str, schemes: tuple[str, ...] = ("http", "https")) -> tuple[str, str]:
    """A URL the probe can fetch (scheme, a host name or an address, a port in 1-65535, nothing
    unprintable), its host's trailing dot dropped, and that host (the target's domain, an
    address for an IP literal); split once, as a million-row list is checked twice."""
    text = text.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise ValueError(f"URL {text!r}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"URL {text!r} must start with " + " or ".join(f"{s}://" for s in schemes))
    host = parts.hostname
    if not host:
        raise ValueError(f"URL {text!r} has no host")
    if _UNUSABLE.search(text):
        raise ValueError(f"URL {text!r} contains a space or a control character")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"URL {text!r} has an invalid port (want 1-65535)")
    if _address(host):
        return text, _address(host)
    if host.endswith("."):  # a name with its root: the same name, but not as a TLS SNI
        user, at, host_port = parts.netloc.rpartition("@")
        name, colon, port_text = host_port.partition(":")  # a name (not [v6]) has no ":"
        text = parts._replace(netloc=user + at + name[:-1] + colon + port_text).geturl()
    return text, parse_domain(host)


def _address(host: str) -> str | None:
    """The canonical form of an IP literal (no zone: it names a local interface), else None."""
    try:
        return str(ipaddress.ip_address(host)) if "%" not in host else None
    except ValueError:
        return None


def _category(text: str) -> str:
    category = text.strip()
    if not _CATEGORY.match(category):
        raise _FieldError("category", f"invalid category {category!r} (like GRP or NEWS)")
    return category


def _load(path: Path, on_skip: OnSkip | None) -> Iterator[tuple[Target, int]]:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        raise TargetFileError(path, 1, "unknown kind of target file (want .yaml, .yml or .csv)")
    if suffix == ".csv":
        with _open(path) as raw:
            yield from _from_csv(path, _utf8_lines(path, raw), on_skip)
    else:
        yield from _from_yaml(path)


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise TargetFileError(path, 1, f"cannot read: {exc}") from exc
    with raw:
        yield raw


def _utf8_lines(path: Path, raw: BinaryIO) -> Iterator[str]:
    """The file's lines decoded one by one, so a byte that is not UTF-8 names its own line."""
    for number, data in enumerate(raw, 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TargetFileError(path, number, f"not UTF-8 (byte {exc.start + 1} of the line)"
                                  ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


# --- YAML (probe.yamlstream: parser events, one target composed at a time) -------------------


def _from_yaml(path: Path) -> Iterator[tuple[Target, int]]:
    """Two passes over the file: the top-level defaults (wherever they stand), then the targets
    one at a time."""
    defaults: dict[str, str] = {}
    default_lines: dict[str, int] = {}
    with _yaml(path) as loader:
        for key, node in ys.top_level(loader, TOP_KEYS, "targets"):
            if node is None:
                ys.skip_rest(loader)
            elif key != "description":
                defaults[key], default_lines[key] = ys.scalar(node, key), ys.line_of(node)
    with _yaml(path) as loader:
        for key, _node in ys.top_level(loader, TOP_KEYS, "targets"):
            while key == "targets" and not loader.check_event(yaml.SequenceEndEvent):
                node = ys.compose(loader, 0)
                yield _target(path, node, defaults, default_lines), ys.line_of(node)
            if key == "targets":
                loader.get_event()


@contextmanager
def _yaml(path: Path) -> Iterator[yaml.CSafeLoader]:
    with _open(path) as raw:
        loader = yaml.CSafeLoader(ys.Text(_utf8_lines(path, raw)))
        try:
            yield loader
        except ys.ShapeError as exc:
            raise TargetFileError(path, exc.line, exc.message) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise TargetFileError(path, mark.line + 1 if mark else 1,
                                  f"not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise TargetFileError(path, 1, f"not valid YAML: {exc}") from None
        finally:
            loader.dispose()


def _target(path: Path, node: yaml.Node, defaults: dict[str, str],
            default_lines: dict[str, int]) -> Target:
    line = ys.line_of(node)
    if isinstance(node, yaml.ScalarNode):
        fields, lines = {"domain": ys.scalar(node, "domain")}, {"domain": line}
    else:
        nodes = ys.mapping(node, TARGET_KEYS)
        if "domain" not in nodes:
            raise TargetFileError(path, line, "missing key 'domain'")
        fields = {k: ys.scalar(v, k) for k, v in nodes.items()}
        lines = {k: ys.line_of(v) for k, v in nodes.items()}
    merged, lines = {**defaults, **fields}, {**default_lines, **lines}
    try:
        return _build(merged, f"{path.name}:{line}")
    except _FieldError as exc:
        raise TargetFileError(path, lines.get(exc.key, line), exc.message) from exc


def make_target(domain: str, url: str | None = None, control: str | None = None,
                source: str = "command line") -> Target:
    """One target from loose values (e.g. `probe check`); ValueError names the bad field."""
    fields = {"domain": domain} | ({"url": url} if url else {}) | (
        {"control": control} if control else {})
    try:
        return _build(fields, source)
    except _FieldError as exc:
        raise ValueError(f"{exc.key}: {exc.message}") from None


class _FieldError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _check(key: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except ValueError as exc:
        raise _FieldError(key, str(exc)) from exc


def _build(fields: dict[str, str], source: str) -> Target:
    domain = _check("domain", parse_domain, fields["domain"])
    url = _check("url", _url, fields.get("url", f"https://{domain}/"))
    category = _category(fields.get("category", "MISC"))
    control = fields.get("control")
    throughput, control_throughput = fields.get("throughput_url"), fields.get(
        "control_throughput_url")
    https_url = lambda u: _url(u, ("https",))  # noqa: E731
    return Target(
        domain=domain,
        url=url,
        category=category,
        control_domain=_check("control", parse_domain, control) if control else None,
        throughput_url=_check("throughput_url", https_url, throughput) if throughput else None,
        control_throughput_url=_check("control_throughput_url", https_url, control_throughput)
        if control_throughput else None,
        source=source,
    )


# --- CSV ----------------------------------------------------------------------------------------


def _from_csv(path: Path, lines: Iterator[str], on_skip: OnSkip | None
              ) -> Iterator[tuple[Target, int]]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        if [h.strip() for h in header] != CSV_HEADER:
            raise TargetFileError(path, 1, "wrong header, want: " + ",".join(CSV_HEADER))
        line = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
        for row in reader:
            target = _csv_row(path, line, row, on_skip) if any(c.strip() for c in row) else None
            if target:
                yield target, line
            line = reader.line_num + 1
    except csv.Error as exc:
        raise TargetFileError(path, reader.line_num, f"not valid CSV: {exc}") from exc


def _csv_row(path: Path, line: int, row: list[str], on_skip: OnSkip | None) -> Target | None:
    """The row's target, or None when it cannot be measured and `on_skip` took the RowError."""
    try:
        if len(row) != len(CSV_HEADER):
            raise ValueError(f"{len(row)} fields, want {len(CSV_HEADER)}")
        url, domain = _url_and_domain(row[0])
        category = _category(row[1] or "MISC")
    except ValueError as exc:
        if on_skip is None:
            raise RowError(path, line, str(exc)) from exc
        on_skip(RowError(path, line, str(exc)))
        return None
    return Target(domain=domain, url=url, category=category, source=f"{path.name}:{line}")
