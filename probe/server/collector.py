"""`POST /api/v1/measurements` of `probe serve --collector DIR`: vantage points upload their
OONI-format measurements here (docs/collector.md; the wire format is probe.results.collector_api).

Each vantage has its own bearer token (the tokens file maps names to tokens) and may upload only
records that name it. A batch is checked whole before anything is stored: one bad line refuses
the batch (400, the line named), and nothing is stored for a bad token (401), a record of
another vantage (403) or an oversized body (413). Storing is idempotent: a record whose id was
stored before is acknowledged again and not written twice. The folder is the same JSONL + SQLite
store a vantage writes (probe.results.store), so `probe results --out DIR` reads it.

Crash safety: a record is written (fsync) before its id is kept, so a crash between the two
can only leave a record without its id, never an id without its record. On start, the lines
past the last size known per file are read again and their ids kept, and the index rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from probe.results.collector_api import (
    MAX_BATCH,
    MAX_BODY,
    PATH,
    BadRecord,
    Received,
    TooMany,
    parse_batch,
    uid,
)
from probe.results.store import Store, StoreError
from probe.server.app import json_error

log = logging.getLogger(__name__)

MIN_TOKEN = 16  # characters: a token short enough to guess is refused when the file is read
_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (uid TEXT PRIMARY KEY, vantage TEXT NOT NULL,
                                     received_at REAL NOT NULL, file TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, size INTEGER NOT NULL);
"""


class CollectorError(Exception):
    """The collector cannot start (tokens file, folder); one line for a person."""


@dataclass(frozen=True)
class Tokens:
    """Token digests -> vantage names. Only SHA-256 digests are kept in memory, and every entry
    is compared on every request, so the time taken says nothing about which matched."""

    digests: tuple[tuple[bytes, str], ...]

    @classmethod
    def load(cls, path: Path | str) -> Tokens:
        """`VANTAGE TOKEN` per line (the token is the last word), `#` comments; raises
        CollectorError naming FILE:LINE."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CollectorError(f"{path}: cannot read the tokens file: {exc}") from None
        entries: dict[bytes, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise CollectorError(f"{path}:{number}: expected `VANTAGE TOKEN`")
            name, token = parts
            if len(token) < MIN_TOKEN:
                raise CollectorError(f"{path}:{number}: token shorter than {MIN_TOKEN} characters")
            digest = _digest(token)
            if digest in entries:
                raise CollectorError(f"{path}:{number}: this token is given twice")
            entries[digest] = name
        if not entries:
            raise CollectorError(f"{path}: no token in the tokens file")
        return cls(tuple(entries.items()))

    def vantage_for(self, token: str) -> str | None:
        given, found = _digest(token), None
        for digest, name in self.digests:  # no early exit
            if hmac.compare_digest(given, digest):
                found = name
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class CollectorConfig:
    out_dir: Path
    tokens: Tokens
    max_body: int = MAX_BODY
    max_batch: int = MAX_BATCH


class Inbox:
    """The collector's folder: the results store, the ids already stored, and a lock that keeps
    a second collector out of it. Not thread-safe: one ingest at a time."""

    def __init__(self, out_dir: Path) -> None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(out_dir / "collector.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CollectorError(f"{out_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise CollectorError(f"{out_dir}: another collector uses this folder") from None
        try:
            self.store = Store(out_dir, vantage="collector")
            self._db = sqlite3.connect(out_dir / "collector.sqlite", check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self.recovered = self._reconcile()
        except (StoreError, sqlite3.Error, OSError) as exc:
            os.close(self._lock_fd)
            raise CollectorError(f"{out_dir}: cannot use it: {exc}") from None

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self.store.close()
        os.close(self._lock_fd)  # releases the lock

    def known(self, record_uid: str) -> bool:
        return self._db.execute("SELECT 1 FROM received WHERE uid = ?", (record_uid,)
                                ).fetchone() is not None

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM received").fetchone()[0]

    def ingest(self, batch: list[Received]) -> int:
        """Stores the records not stored before; returns how many were new. Raises StoreError
        (what was stored before it stays stored, with its id)."""
        new = 0
        for received in batch:
            if self.known(received.uid):
                continue
            path = self.store.path_for(received.measurement.start_time)
            before = _size(path)
            try:
                self.store.append_record(received.record, received.measurement, received.vantage)
            except StoreError:
                if _size(path) > before:  # written, not indexed: keep the id (a re-send is a
                    self._keep(received.uid, received.vantage, path)  # duplicate), reindex later
                raise
            self._keep(received.uid, received.vantage, path)
            new += 1
        return new

    def _keep(self, record_uid: str, vantage: str, path: Path) -> None:
        try:
            with self._db:
                self._db.execute("INSERT INTO received VALUES (?, ?, ?, ?)",
                                 (record_uid, vantage, time.time(), path.name))
                self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?)",
                                 (path.name, path.stat().st_size))
        except (sqlite3.Error, OSError) as exc:  # the record is stored; a restart finds its id
            raise StoreError(f"stored a record but could not keep its id: {exc}") from exc

    def _reconcile(self) -> int:
        """Keeps the ids of lines past each file's known size (a crash between writing a record
        and keeping its id); returns how many. The index is rebuilt when there were any, or
        when it does not hold one row per id (an index write that failed)."""
        sizes = dict(self._db.execute("SELECT name, size FROM files").fetchall())
        found = 0
        for path in sorted(self.store.out_dir.glob("measurements-*.jsonl")):
            size = path.stat().st_size
            if size <= sizes.get(path.name, 0):
                continue
            for record in _records_from(path, sizes.get(path.name, 0)):
                record_uid = uid(record)
                if not self.known(record_uid):
                    vantage = str(record.get("annotations", {}).get("vantage", ""))
                    self._db.execute("INSERT INTO received VALUES (?, ?, ?, ?)",
                                     (record_uid, vantage, time.time(), path.name))
                    found += 1
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?)", (path.name, size))
            self._db.commit()
        if found or self.store.count() != self.count():  # or an index write failed before
            self.store.reindex()
        return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _records_from(path: Path, offset: int):
    """The records of the whole lines of `path` from byte `offset` on (torn lines skipped)."""
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                record = json.loads(raw)
                if isinstance(record, dict) and "test_keys" in record:
                    yield record


@dataclass
class Collector:
    config: CollectorConfig
    inbox: Inbox
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


COLLECTOR = web.AppKey("collector", Collector)


def _bearer(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


async def handle_measurements(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    vantage = collector.config.tokens.vantage_for(_bearer(request))
    if vantage is None:
        return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="probe-collector"'})
    body = await request.read()  # read within the size and time limits by app._bounded_reads
    try:  # parsing 8 MiB of JSON takes a while: not in the loop that serves the helper
        batch = await asyncio.to_thread(parse_batch, body, collector.config.max_batch)
    except TooMany as exc:
        return json_error(413, str(exc))
    except BadRecord as exc:
        return json_error(400, str(exc))
    for number, received in enumerate(batch, start=1):
        if received.vantage != vantage:
            return json_error(403, f"measurement {number} names vantage {received.vantage!r};"
                                   f" this token is for {vantage!r}")
    async with collector.lock:  # one batch at a time: the duplicate check sees the last one
        try:
            stored = await asyncio.to_thread(collector.inbox.ingest, batch)
        except StoreError as exc:
            log.error("collector cannot store: %s", exc)
            return web.json_response({"error": "the collector cannot store now, retry later"},
                                     status=503, headers={"Retry-After": "60"})
    return web.json_response({"stored": stored, "duplicates": len(batch) - stored,
                              "acknowledged": [r.uid for r in batch]})


def install(app: web.Application, config: CollectorConfig) -> None:
    """Adds the route; the folder is opened now (a bad one fails `probe serve` at start) and
    closed with the app."""
    inbox = Inbox(config.out_dir)
    if inbox.recovered:
        log.warning("collector: kept the ids of %d record(s) stored before a crash",
                    inbox.recovered)
    app[COLLECTOR] = Collector(config, inbox)
    app.router.add_post(f"/{PATH}", handle_measurements)

    async def close(_app: web.Application) -> None:
        inbox.close()

    app.on_cleanup.append(close)
