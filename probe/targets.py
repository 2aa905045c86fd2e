"""Target lists: our YAML files and Citizen Lab test-list CSVs, validated strictly.

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

CSV: the header `url,category_code,category_description,date_added,source,notes`, one URL a row.

Any error stops loading (nothing is measured from a broken list) with a TargetFileError whose
str is one line, "FILE:LINE: message". Duplicates: the same domain twice in one YAML file is an
error (a typo, most likely); in a CSV (public lists repeat domains under http and https) and
across files the first occurrence wins and later ones are dropped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from probe.model import Target

__all__ = ["TargetFileError", "default_target_files", "load_targets", "parse_domain"]

CSV_HEADER = ["url", "category_code", "category_description", "date_added", "source", "notes"]
TOP_KEYS = frozenset({"category", "control", "control_throughput_url", "description", "targets"})
TARGET_KEYS = frozenset({"domain", "url", "category", "control", "throughput_url",
                         "control_throughput_url"})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
_STR = "tag:yaml.org,2002:str"


class TargetFileError(ValueError):
    """A target file that cannot be used; str(err) is "FILE:LINE: message"."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


def default_target_files() -> list[Path]:
    """The shipped lists (probe/data/targets, a link to targets/ in a checkout)."""
    folder = Path(__file__).resolve().parent / "data" / "targets"
    return sorted(folder.glob("*.yaml"))


def load_targets(paths: Iterable[Path | str]) -> list[Target]:
    """Every target of every file, in order, first occurrence of a domain winning."""
    seen: set[str] = set()
    targets: list[Target] = []
    for path in map(Path, paths):
        for target in _load(path):
            if target.domain not in seen:
                seen.add(target.domain)
                targets.append(target)
    return targets


def parse_domain(text: str) -> str:
    """A lower-case host name; raises ValueError with the reason."""
    domain = text.strip().lower()
    if not domain or len(domain) > 253:
        raise ValueError(f"invalid domain {text!r}")
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
    parts = urlsplit(text.strip())
    if parts.scheme not in schemes:
        raise ValueError(f"URL {text!r} must start with " + " or ".join(f"{s}://" for s in schemes))
    if not parts.hostname:
        raise ValueError(f"URL {text!r} has no host")
    parse_domain(parts.hostname)
    return text.strip()


def _load(path: Path) -> list[Target]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetFileError(path, 1, f"cannot read: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        targets = _from_yaml(path, text)
    elif suffix == ".csv":
        targets = _from_csv(path, text)
    else:
        raise TargetFileError(path, 1, "unknown kind of target file (want .yaml, .yml or .csv)")
    if not targets:
        raise TargetFileError(path, 1, "no targets")
    return targets


# --- YAML ---------------------------------------------------------------------------------------


def _from_yaml(path: Path, text: str) -> list[Target]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise TargetFileError(path, line, f"not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise TargetFileError(path, 1, f"not valid YAML: {exc}") from exc
    if root is None:
        return []
    defaults: dict[str, str] = {}
    default_lines: dict[str, int] = {}
    items = root
    if isinstance(root, yaml.MappingNode):
        fields = _mapping(path, root, TOP_KEYS)
        defaults = {k: _scalar(path, v, k) for k, v in fields.items() if k != "targets"}
        default_lines = {k: _line(v) for k, v in fields.items()}
        if "targets" not in fields:
            raise TargetFileError(path, _line(root), "missing key 'targets'")
        items = fields["targets"]
    if not isinstance(items, yaml.SequenceNode):
        raise TargetFileError(path, _line(items), "targets must be a list")
    targets, lines = [], {}
    for node in items.value:
        target = _target(path, node, defaults, default_lines)
        if target.domain in lines:
            raise TargetFileError(path, _line(node),
                                  f"duplicate domain {target.domain} (first on line {lines[target.domain]})")
        lines[target.domain] = _line(node)
        targets.append(target)
    return targets


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _mapping(path: Path, node: yaml.Node, allowed: frozenset[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise TargetFileError(path, _line(node), "expected a mapping")
    fields: dict[str, yaml.Node] = {}
    for key_node, value in node.value:
        key = _scalar(path, key_node, "key")
        if key not in allowed:
            raise TargetFileError(path, _line(key_node), f"unknown key {key!r} (allowed: "
                                  + ", ".join(sorted(allowed)) + ")")
        if key in fields:
            raise TargetFileError(path, _line(key_node), f"key {key!r} given twice")
        fields[key] = value
    return fields


def _scalar(path: Path, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR or not node.value.strip():
        raise TargetFileError(path, _line(node), f"{what} must be a non-empty string")
    return node.value


def _target(path: Path, node: yaml.Node, defaults: dict[str, str],
            default_lines: dict[str, int]) -> Target:
    if isinstance(node, yaml.ScalarNode):
        fields = {"domain": _scalar(path, node, "domain")}
        lines = {"domain": _line(node)}
    else:
        nodes = _mapping(path, node, TARGET_KEYS)
        if "domain" not in nodes:
            raise TargetFileError(path, _line(node), "missing key 'domain'")
        fields = {k: _scalar(path, v, k) for k, v in nodes.items()}
        lines = {k: _line(v) for k, v in nodes.items()}
    merged, lines = {**defaults, **fields}, {**default_lines, **lines}
    try:
        return _build(merged, f"{path.name}:{_line(node)}")
    except _FieldError as exc:
        raise TargetFileError(path, lines.get(exc.key, _line(node)), exc.message) from exc


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
    category = fields.get("category", "MISC").strip()
    if not _CATEGORY.match(category):
        raise _FieldError("category", f"invalid category {category!r} (like GRP or NEWS)")
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


def _from_csv(path: Path, text: str) -> list[Target]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        if [h.strip() for h in header] != CSV_HEADER:
            raise TargetFileError(path, 1, "wrong header, want: " + ",".join(CSV_HEADER))
        return list(_csv_rows(path, reader))
    except csv.Error as exc:
        raise TargetFileError(path, reader.line_num, f"not valid CSV: {exc}") from exc


def _csv_rows(path: Path, reader: Any) -> Iterator[Target]:
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(CSV_HEADER):
            raise TargetFileError(path, line, f"{len(row)} fields, want {len(CSV_HEADER)}")
        url, category = row[0].strip(), row[1].strip() or "MISC"
        try:
            host = urlsplit(_url(url)).hostname or ""
            target = _build({"domain": host, "url": url, "category": category},
                            f"{path.name}:{line}")
        except ValueError as exc:
            raise TargetFileError(path, line, str(exc)) from exc
        if target.domain not in seen:
            seen.add(target.domain)
            yield target
