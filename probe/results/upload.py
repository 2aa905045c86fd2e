"""The vantage side of central results: send what the collector has not acknowledged yet
(docs/collector.md; wire format in probe.results.collector_api).

What is left to send, and the durable cursor, are probe.results.outbox's. The cursor is saved
after each acknowledged batch: an outage, a crash or a deadline costs at most one batch sent
again, which the collector acknowledges without storing it twice. Nothing is deleted.

Answers: 200 acknowledges the batch; 5xx, 429 and network errors are retried with a growing
wait, a bounded number of times, then the upload stops and the next one resumes; 400 or 413
splits the batch to find the record refused (a 413, or a 400 naming its line), which is logged
and skipped (a collector that refuses it once will refuse it again); 401, 403 and anything else
stop at once, as does a 400 that names no line (not a collector).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from probe import __version__
from probe.results.collector_api import CONTENT_TYPE, PATH
from probe.results.outbox import Cursor, Item, batches, lines, pending

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


class _Refused(Exception):
    """The collector answered with a status that ends the upload (401, 403, 404...)."""


class _Uploader:
    def __init__(self, session: aiohttp.ClientSession, settings: UploadSettings,
                 report: UploadReport) -> None:
        self.session, self.settings, self.report = session, settings, report
        self.rng = random.Random()

    async def send(self, batch: list[Item]) -> str | None:
        """Sends a batch; None once it is acknowledged or its refused records skipped, else
        why the upload must stop (raises _Refused for a final answer)."""
        answer = await self._post(b"".join(item.line + b"\n" for item in batch))
        if isinstance(answer, str):
            return answer
        status, payload = answer
        if status == 200:
            listed = payload.get("acknowledged")
            acknowledged = set(listed) & {i.uid for i in batch} if isinstance(listed, list) else ()
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
        error = str(payload.get("error", ""))
        # a record refused for itself: too large, or a 400 naming its line (docs/collector.md);
        # any other 400 is a server that does not speak the API, and skips nothing
        if status == 413 or (status == 400 and error.startswith("line 1:")):
            log.warning("the collector refused a measurement of %s (%d): %s", batch[0].file,
                        status, error)
            self.report.refused += 1
            return None
        raise _Refused(f"the collector answered {status}: {error}".rstrip(": "))

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
    with _exclusive(Cursor.file_for(out_dir, settings.endpoint).with_suffix(".lock")) as alone:
        if not alone:
            report.failure = "another upload to this collector is under way"
            return report
        cursor = Cursor.load(out_dir, settings.endpoint)
        try:
            async with asyncio.timeout(settings.deadline), _session(settings) as session:
                report.failure = await _send_all(_Uploader(session, settings, report), cursor)
        except _Refused as exc:
            report.failure, report.final = str(exc), True
        except TimeoutError:
            report.failure = f"stopped at the deadline ({settings.deadline:g} s)"
        report.pending = sum(1 for _ in lines(out_dir, cursor.offsets))
    return report


async def _send_all(uploader: _Uploader, cursor: Cursor) -> str | None:
    """Batch after batch, the cursor saved after each; why it stopped, or None."""
    settings = uploader.settings
    for batch in batches(pending(cursor.path.parent, cursor.offsets), settings.batch_records,
                         settings.batch_bytes):
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
    """For the daemon: `kick()` after each run starts an upload in the background; a kick while
    one is under way makes it go once more when done (for the records stored meanwhile).
    Measuring never waits for it; each upload's outcome is one log line."""

    def __init__(self, out_dir: Path | str, settings: UploadSettings) -> None:
        self.out_dir, self.settings = Path(out_dir), settings
        self.task: asyncio.Task[UploadReport] | None = None
        self._again = False

    def kick(self) -> None:
        if self.task is not None and not self.task.done():
            self._again = True
            return
        self._again = False
        self.task = asyncio.get_running_loop().create_task(self._uploads())
        self.task.add_done_callback(_log_bug)

    async def _uploads(self) -> UploadReport:
        while True:
            report = await upload(self.out_dir, self.settings)
            log.log(logging.WARNING if report.failure else logging.INFO, "%s", report.line())
            if report.failure or not self._again:  # a failed one waits for the next run
                return report
            self._again = False


def _log_bug(task: asyncio.Task[UploadReport]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("upload failed", exc_info=exc)  # a bug: as loud as in the foreground
