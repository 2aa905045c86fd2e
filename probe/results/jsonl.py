"""JSON-lines files of records: appends of whole records only, and reads that skip a torn line.

The appending side of `Store` (one checked write, fsync, cut back on failure) and the readers
every consumer of stored results uses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from probe.model import TargetMeasurement
from probe.results.ooni import from_ooni


class StoreError(Exception):
    """The results cannot be stored (full disk, folder gone or read-only, corrupt index);
    str(err) is one line for a person. Records written before it are intact."""


def append_lines(path: Path, lines: list[str]) -> None:
    """Records, all whole or none at all: one write of the lines, checked, then fsync; on any
    failure the file is cut back to where the write began. The lock keeps writers in other
    processes from appending between our size check and a truncation."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {reason(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = os.fstat(fd).st_size
        if start > 0 and os.pread(fd, 1, start - 1) != b"\n":
            data = b"\n" + data  # close a line a crash left open, so ours stays whole
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise StoreError(f"cannot write {path}: {reason(exc)}") from exc
    finally:
        os.close(fd)  # releases the lock


def reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or str(exc)


def read_records(path: Path | str) -> Iterator[dict[str, Any]]:
    """The records of one JSON-lines file; lines that do not parse (a torn write) are skipped."""
    with open(path, "rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and "test_keys" in record:
                yield record


def read_measurements(path: Path | str) -> Iterator[TargetMeasurement]:
    """The TargetMeasurements of one JSON-lines file, skipping what cannot be rebuilt."""
    for record in read_records(path):
        try:
            yield from_ooni(record)
        except Exception:  # noqa: BLE001 - an old or damaged record must not stop a reader
            continue
