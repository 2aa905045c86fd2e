"""Reading a YAML list without building the document: parser events (libyaml), one item
composed at a time, nesting below an item's own mapping skipped rather than built, aliases
refused. Memory follows the largest item, not the file. Errors are ShapeError(line, message)
(and yaml's own errors for text that is not YAML); the caller adds the file name.
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml

__all__ = ["ShapeError", "Text", "checked_key", "compose", "line_of", "mapping", "scalar",
           "skip_rest", "top_level"]

STR = "tag:yaml.org,2002:str"
READ = 1 << 16  # characters handed to the parser at a time


class ShapeError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


class Text:
    """A text stream for the parser from decoded lines (the caller decodes line by line, so a
    byte that is not UTF-8 is reported on its own line)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines

    def read(self, size: int = -1) -> str:
        chunk: list[str] = []
        total = 0
        for line in self._lines:
            chunk.append(line)
            total += len(line)
            if total >= max(size, READ):
                break
        return "".join(chunk)


def top_level(loader: yaml.CSafeLoader, allowed: frozenset[str], list_key: str
              ) -> Iterator[tuple[str, yaml.Node | None]]:
    """(key, value) of the top-level mapping; (list_key, None) when the parser stands at the
    list's first item (a bare list counts as `list_key`): the caller then reads the items and
    the list's end before resuming."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return
    loader.get_event()  # document start
    start = loader.peek_event()
    if isinstance(start, yaml.SequenceStartEvent):  # a bare list
        loader.get_event()
        yield list_key, None
    elif isinstance(start, yaml.MappingStartEvent):
        loader.get_event()
        yield from _top_keys(loader, allowed, list_key, line_of(start))
    else:
        raise ShapeError(line_of(start), f"{list_key} must be a list")
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        raise ShapeError(line_of(loader.peek_event()), "more than one YAML document")


def _top_keys(loader: yaml.CSafeLoader, allowed: frozenset[str], list_key: str, line: int
              ) -> Iterator[tuple[str, yaml.Node | None]]:
    seen: set[str] = set()
    while not loader.check_event(yaml.MappingEndEvent):
        name = checked_key(compose(loader, 1), allowed, seen)
        if name != list_key:
            yield name, compose(loader, 1)
            continue
        start = loader.peek_event()
        if not isinstance(start, yaml.SequenceStartEvent):
            raise ShapeError(line_of(start), f"{list_key} must be a list")
        loader.get_event()
        yield name, None
    loader.get_event()
    if list_key not in seen:
        raise ShapeError(line, f"missing key {list_key!r}")


def skip_rest(loader: yaml.CSafeLoader) -> None:
    """Consumes the rest of the sequence just entered, its end included."""
    depth = 1
    while depth:
        event = loader.get_event()
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def compose(loader: yaml.CSafeLoader, depth: int) -> yaml.Node:
    """The next node. Collections from `depth` 1 on (below an item's own mapping) are skipped
    and left empty: no valid item nests deeper, and a huge value must not be built to be
    refused (the caller's type check then names its line)."""
    event = loader.get_event()
    if isinstance(event, yaml.AliasEvent):
        raise ShapeError(line_of(event), "YAML aliases are not allowed here")
    if isinstance(event, yaml.ScalarEvent):
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
    kind = yaml.MappingNode if isinstance(event, yaml.MappingStartEvent) else yaml.SequenceNode
    node = kind(event.tag or "", [], event.start_mark, event.end_mark)
    if depth >= 1:
        skip_rest(loader)
        return node
    while not loader.check_event(yaml.MappingEndEvent, yaml.SequenceEndEvent):
        item = compose(loader, depth + 1)
        node.value.append((item, compose(loader, depth + 1))
                          if kind is yaml.MappingNode else item)
    loader.get_event()
    return node


def line_of(item: yaml.Node | yaml.Event) -> int:
    return item.start_mark.line + 1


def checked_key(node: yaml.Node, allowed: frozenset[str], seen: set[str]) -> str:
    name = scalar(node, "key")
    if name not in allowed:
        raise ShapeError(line_of(node), f"unknown key {name!r} (allowed: "
                         + ", ".join(sorted(allowed)) + ")")
    if name in seen:
        raise ShapeError(line_of(node), f"key {name!r} given twice")
    seen.add(name)
    return name


def mapping(node: yaml.Node, allowed: frozenset[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise ShapeError(line_of(node), "expected a mapping")
    seen: set[str] = set()
    return {checked_key(k, allowed, seen): v for k, v in node.value}


def scalar(node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != STR or not node.value.strip():
        raise ShapeError(line_of(node), f"{what} must be a non-empty string")
    return node.value
