"""Reading target files: our YAML (through probe.yamlstream, one target composed at a time) and
Citizen Lab's CSV (a CSV row that cannot be measured is a RowError for `on_skip`). `read` yields
(target, line) pairs; a file that cannot be used raises TargetFileError when it is met."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import yaml

from probe import yamlstream as ys
from probe.model import Target
from probe.targets.errors import OnSkip, RowError, TargetFileError
from probe.targets.fields import FieldError, build, parse_category, url_and_domain

CSV_HEADER = ["url", "category_code", "category_description", "date_added", "source", "notes"]
TOP_KEYS = frozenset({"category", "control", "control_throughput_url", "description", "media",
                      "targets"})
TARGET_KEYS = frozenset({"domain", "url", "category", "control", "throughput_url",
                         "control_throughput_url", "media"})


def read(path: Path, on_skip: OnSkip | None) -> Iterator[tuple[Target, int]]:
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


# --- YAML ------------------------------------------------------------------------------------


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
                defaults[key], default_lines[key] = _value(node, key), ys.line_of(node)
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


def _value(node: yaml.Node, key: str) -> str:
    """A field's text; `media` is a YAML boolean (checked by fields.parse_flag)."""
    if key == "media" and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
        return node.value
    return ys.scalar(node, key)


def _target(path: Path, node: yaml.Node, defaults: dict[str, str],
            default_lines: dict[str, int]) -> Target:
    line = ys.line_of(node)
    if isinstance(node, yaml.ScalarNode):
        fields, lines = {"domain": ys.scalar(node, "domain")}, {"domain": line}
    else:
        nodes = ys.mapping(node, TARGET_KEYS)
        if "domain" not in nodes:
            raise TargetFileError(path, line, "missing key 'domain'")
        fields = {k: _value(v, k) for k, v in nodes.items()}
        lines = {k: ys.line_of(v) for k, v in nodes.items()}
    merged, lines = {**defaults, **fields}, {**default_lines, **lines}
    try:
        return build(merged, f"{path.name}:{line}")
    except FieldError as exc:
        raise TargetFileError(path, lines.get(exc.key, line), exc.message) from exc


# --- CSV -------------------------------------------------------------------------------------


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
        url, domain = url_and_domain(row[0])
        category = parse_category(row[1] or "MISC")
    except ValueError as exc:
        if on_skip is None:
            raise RowError(path, line, str(exc)) from exc
        on_skip(RowError(path, line, str(exc)))
        return None
    return Target(domain=domain, url=url, category=category, source=f"{path.name}:{line}")
