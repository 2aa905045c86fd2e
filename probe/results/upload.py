"""The vantage side of central results: send what the collector has not acknowledged yet
(docs/collector.md; wire format in probe.results.collector_api).

The cursor, `DIR/upload-<id of the collector URL>.json`, holds per JSON-lines file the byte
offset up to which every record was acknowledged by that collector. The files are append-only,
so what lies past the offsets is what is left to send; the cursor is saved (write, fsync,
rename) after each acknowledged batch. An outage, a crash or a deadline costs at most one batch
sent again, which the collector acknowledges without storing it twice. Nothing is deleted.

Answers: 200 acknowledges the batch; 5xx, 429 and network errors are retried with a growing
wait, a bounded number of times, then the upload stops and the next one resumes; 400 or 413
splits the batch to find the record refused, which is logged and skipped (a collector that
refuses it once will refuse it again); 401, 403 and anything else stop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from probe import __version__
from probe.results.collector_api import CONTENT_TYPE, PATH, uid

log = logging.getLogger(__name__)

# what the network and a collector can make a request raise (TimeoutError is an OSError)
UPLOAD_ERRORS = (aiohttp.ClientError, OSError)
_MAX_ANSWER = 1 << 20  # bytes of a collector's answer read


@dataclass(frozen=True)
class UploadSettings:
    collector: str  # the collector's URL (its base, or the full endpoint)
    token: str
    ca_file: str | None = None  # an extra CA (PEM) to trust
    batch_records: int = 100
    batch_bytes: int = 4 << 20  # half the collector's default limit
    timeout: float = 30.0  # seconds per request
    tries: int = 4  # per batch
    backoff: float = 1.0  # seconds before the second try, doubled for each next, at most 60
    deadline: float = 600.0  # seconds for the whole upload

    @property
    def endpoint(self) -> str:
        base = self.collector.rstrip("/")
        return base if base.endswith(f"/{PATH}") else f"{base}/{PATH}"


@dataclass
class UploadReport:
    sent: int = 0  # records the collector acknowledged in this upload
    stored: int = 0  # of which it had not seen before
    duplicates: int = 0
    refused: int = 0  # records it refused on their own (skipped, logged)
    pending: int = 0  # lines left to send when the upload stopped
    failure: str | None = None  # why it stopped early, None when everything was sent
    final: bool = False  # the collector refused us (token, URL): retrying will not help

    def line(self) -> str:
        text = (f"uploaded {self.sent} measurement(s) ({self.stored} new, {self.duplicates}"
                f" already there), {self.refused} refused, {self.pending} left")
        return f"{text}: {self.failure}" if self.failure else text


@dataclass(frozen=True)
class _Item:
    file: str
    end: int  # byte offset just past the line
    line: bytes
    uid: str


class _Refused(Exception):
    """The collector answered with a status that ends the upload (401, 403, 404...)."""


@dataclass
class Cursor:
    path: Path
    endpoint: str
    offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, out_dir: Path, endpoint: str) -> Cursor:
        name = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        path = out_dir / f"upload-{name}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            offsets = {str(k): int(v) for k, v in data["offsets"].items()}
        except FileNotFoundError:
            offsets = {}
        except (ValueError, KeyError, TypeError, AttributeError):  # all again: nothing is lost
            log.warning("%s is unreadable: sending everything again (stored once)", path)
            offsets = {}
        return cls(path, endpoint, offsets)

    def advance(self, batch: list[_Item]) -> None:
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


def _lines(out_dir: Path, offsets: dict[str, int]) -> Iterator[tuple[str, int, bytes]]:
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


def pending(out_dir: Path, offsets: dict[str, int]) -> Iterator[_Item]:
    """The records left to send (lines that are not a record, torn by a crash, are passed)."""
    for name, end, line in _lines(out_dir, offsets):
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "test_keys" in record:
            yield _Item(name, end, line, uid(record))


def _batches(items: Iterator[_Item], settings: UploadSettings) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= settings.batch_records
                      or size + len(item.line) + 1 > settings.batch_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.line) + 1
    if batch:
        yield batch


class _Uploader:
    def __init__(self, session: aiohttp.ClientSession, settings: UploadSettings,
                 report: UploadReport) -> None:
        self.session, self.settings, self.report = session, settings, report
        self.rng = random.Random()

    async def send(self, batch: list[_Item]) -> str | None:
        """Sends a batch; None once it is acknowledged or its refused records skipped, else
        why the upload must stop (raises _Refused for a final answer)."""
        answer = await self._post(b"".join(item.line + b"\n" for item in batch))
        if isinstance(answer, str):
            return answer
        status, payload = answer
        if status == 200:
            acknowledged = set(payload.get("acknowledged") or ())
            if not all(item.uid in acknowledged for item in batch):
                raise _Refused("the collector did not acknowledge every measurement sent")
            stored = payload.get("stored")
            stored = stored if isinstance(stored, int) and 0 <= stored <= len(batch) else 0
            self.report.sent += len(batch)
            self.report.stored += stored
            self.report.duplicates += len(batch) - stored
            return None
        if status in (400, 413) and len(batch) > 1:  # one record spoils the batch: find it
            for item in batch:
                if (failure := await self.send([item])) is not None:
                    return failure
            return None
        if status in (400, 413):
            log.warning("the collector refused a measurement of %s (%d): %s", batch[0].file,
                        status, payload.get("error", ""))
            self.report.refused += 1
            return None
        raise _Refused(f"the collector answered {status}: {payload.get('error', '')}".rstrip(": "))

    async def _post(self, body: bytes) -> tuple[int, dict] | str:
        """(status, answer) of the first final answer, or why every try failed."""
        settings, failure = self.settings, ""
        headers = {"Authorization": f"Bearer {settings.token}", "Content-Type": CONTENT_TYPE,
                   "User-Agent": f"probe/{__version__}"}
        for attempt in range(settings.tries):
            if attempt:
                wait = min(settings.backoff * 2 ** (attempt - 1), 60.0)
                await asyncio.sleep(wait * self.rng.uniform(0.5, 1.0))  # volunteers drift apart
            try:
                async with self.session.post(settings.endpoint, data=body, headers=headers,
                                             allow_redirects=False) as response:
                    payload = await _answer(response)
                    if response.status != 429 and response.status < 500:
                        return response.status, payload
                    failure = f"the collector answered {response.status}"
            except UPLOAD_ERRORS as exc:
                failure = f"cannot reach the collector: {type(exc).__name__}: {exc}".rstrip(": ")
        return f"{failure} ({settings.tries} tries)"


async def _answer(response: aiohttp.ClientResponse) -> dict:
    data = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > _MAX_ANSWER:
            return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


async def upload(out_dir: Path | str, settings: UploadSettings) -> UploadReport:
    """Sends every record of `out_dir` the collector has not acknowledged; never raises for the
    network or the collector's answers (the report says what happened)."""
    out_dir, report = Path(out_dir), UploadReport()
    cursor = Cursor.load(out_dir, settings.endpoint)
    with _exclusive(cursor.path.with_suffix(".lock")) as alone:
        if not alone:
            report.failure = "another upload to this collector is under way"
            return report
        try:
            async with asyncio.timeout(settings.deadline), _session(settings) as session:
                report.failure = await _send_all(_Uploader(session, settings, report), cursor)
        except _Refused as exc:
            report.failure, report.final = str(exc), True
        except TimeoutError:
            report.failure = f"stopped at the deadline ({settings.deadline:g} s)"
    report.pending = sum(1 for _ in _lines(out_dir, cursor.offsets))
    return report


async def _send_all(uploader: _Uploader, cursor: Cursor) -> str | None:
    """Batch after batch, the cursor saved after each; why it stopped, or None."""
    for batch in _batches(pending(cursor.path.parent, cursor.offsets), uploader.settings):
        if (failure := await uploader.send(batch)) is not None:
            return failure
        cursor.advance(batch)
        try:
            cursor.save()
        except OSError as exc:  # a full disk: what was sent is sent again next time
            return f"cannot save {cursor.path.name}: {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _session(settings: UploadSettings) -> aiohttp.ClientSession:
    context = ssl.create_default_context(cafile=settings.ca_file)
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context), timeout=timeout)


class BackgroundUpload:
    """For the daemon: `kick()` after each run starts an upload in the background unless one is
    under way; measuring never waits for it, and its outcome is one log line."""

    def __init__(self, out_dir: Path | str, settings: UploadSettings) -> None:
        self.out_dir, self.settings = Path(out_dir), settings
        self.task: asyncio.Task[UploadReport] | None = None

    def kick(self) -> None:
        if self.task is not None and not self.task.done():
            return
        self.task = asyncio.get_running_loop().create_task(upload(self.out_dir, self.settings))
        self.task.add_done_callback(_log_outcome)


def _log_outcome(task: asyncio.Task[UploadReport]) -> None:
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:  # a bug: as loud as in the foreground
        log.error("upload failed", exc_info=exc)
        return
    report = task.result()
    log.log(logging.WARNING if report.failure else logging.INFO, "%s", report.line())
