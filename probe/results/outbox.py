"""What a vantage has left to send to a collector: the durable cursor and the records past it.

The cursor, `DIR/upload-<id of the collector URL>.json`, holds per JSON-lines file the byte
offset up to which every record was acknowledged by that collector. The files are append-only,
so what lies past the offsets is what is left to send. It is saved by write, fsync and rename,
so a crash leaves the old cursor or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from probe.results.collector_api import uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One record to send: where its line ends in which file, the line, the record's id."""

    file: str
    end: int  # byte offset just past the line
    line: bytes
    uid: str


@dataclass
class Cursor:
    """Per file, the offset up to which one collector acknowledged everything."""

    path: Path
    endpoint: str
    offsets: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def file_for(out_dir: Path, endpoint: str) -> Path:
        return out_dir / f"upload-{hashlib.sha256(endpoint.encode()).hexdigest()[:16]}.json"

    @classmethod
    def load(cls, out_dir: Path, endpoint: str) -> Cursor:
        path = cls.file_for(out_dir, endpoint)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            offsets = {str(k): int(v) for k, v in data["offsets"].items()}
        except FileNotFoundError:
            offsets = {}
        except (ValueError, KeyError, TypeError, AttributeError):  # all again: nothing is lost
            log.warning("%s is unreadable: sending everything again (stored once)", path)
            offsets = {}
        return cls(path, endpoint, offsets)

    def advance(self, batch: list[Item]) -> None:
        for item in batch:
            self.offsets[item.file] = max(self.offsets.get(item.file, 0), item.end)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"collector": self.endpoint, "offsets": self.offsets}, indent=1)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def lines(out_dir: Path, offsets: dict[str, int]) -> Iterator[tuple[str, int, bytes]]:
    """(file, end offset, line) of every whole line past the offsets; a last line without its
    newline is still being written and waits for the next upload."""
    for path in sorted(out_dir.glob("measurements-*.jsonl")):
        offset = offsets.get(path.name, 0)
        if offset > path.stat().st_size:  # not the file the cursor knew: all of it again
            offset = 0
        with open(path, "rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                yield path.name, offset, raw.rstrip(b"\n")


def pending(out_dir: Path, offsets: dict[str, int]) -> Iterator[Item]:
    """The records left to send (lines that are not a record, torn by a crash, are passed)."""
    for name, end, line in lines(out_dir, offsets):
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "test_keys" in record:
            yield Item(name, end, line, uid(record))


def batches(items: Iterator[Item], records: int, size_limit: int) -> Iterator[list[Item]]:
    """Items in batches of at most `records` and `size_limit` bytes (a larger item alone)."""
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= records or size + len(item.line) + 1 > size_limit):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.line) + 1
    if batch:
        yield batch
