"""Append-only results: one OONI-format JSON line per target, plus a SQLite index for queries.

Files in `out_dir`:
- measurements-YYYY-MM-DD.jsonl (UTC date of each measurement's start): one record per line,
  written with a single checked write + fsync under an advisory lock, so completed targets
  survive a killed run. A short or failed write (a full disk) is undone by truncating the file
  back to where the write began, so nothing is torn, and raises StoreError. A line torn by a
  crash is skipped when reading, and the next append starts on a fresh line.
- index.sqlite (WAL): one row per record, for `runs`, `latest` and `history` (baselines).

Group commit: with `batch=N` records are held and written together (one write, one fsync, one
index transaction) once N are waiting, or when `flush()` is called (`probe run` calls it every
second and at the end, `close()` always). What a crash (kill -9, power loss) can lose is that
window: at most N records, or one second of them; never part of one. Queries flush first.

Before anything is written, every address in `scrub` (the volunteer's public IP as the helper saw
it, local interface addresses) is replaced by "[scrubbed]" anywhere in the record.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from probe import jsontext
from probe.model import TargetMeasurement, Vantage
from probe.results.jsonl import (
    StoreError,
    append_lines,
    read_measurements,
    read_records,
    reason,
)
from probe.results.ooni import from_ooni, probe_blocking, report_start, to_ooni
from probe.results.scrub import scrub

__all__ = ["Store", "StoreError", "local_addresses", "read_measurements", "read_records"]

INDEX_COLUMNS = ("report_id", "input", "domain", "category", "vantage", "asn", "cc", "start_time",
                 "verdict", "blocking", "failure", "rule", "rate_bps", "control_rate_bps", "ratio",
                 "method")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    report_id TEXT NOT NULL, input TEXT NOT NULL, domain TEXT NOT NULL, category TEXT,
    vantage TEXT NOT NULL, asn TEXT, cc TEXT,
    start_time REAL NOT NULL,  -- UNIX seconds
    verdict TEXT NOT NULL, blocking TEXT, failure TEXT, rule TEXT,
    rate_bps REAL, control_rate_bps REAL, ratio REAL, method TEXT,
    file TEXT NOT NULL  -- the JSON-lines file holding the full record
);
CREATE INDEX IF NOT EXISTS by_domain ON measurements (domain, vantage, start_time);
CREATE INDEX IF NOT EXISTS by_report ON measurements (report_id);
"""


_INSERT = (f"INSERT INTO measurements ({', '.join((*INDEX_COLUMNS, 'file'))})"
           f" VALUES ({', '.join(f':{k}' for k in (*INDEX_COLUMNS, 'file'))})")


class Store:
    """Where one vantage's results go. Processes appending to one folder at once take turns
    (an advisory lock per file); a folder removed under a running store is made again."""

    def __init__(self, out_dir: Path | str, vantage: Vantage | str,
                 scrub_addresses: Iterable[str] = (), batch: int = 1) -> None:
        self.out_dir = Path(out_dir)
        self.vantage = vantage if isinstance(vantage, Vantage) else Vantage(name=vantage)
        self.scrub_addresses: set[str] = set(scrub_addresses)
        self.batch = max(1, batch)  # records per write + fsync + index transaction
        self._pending: list[tuple[Path, str, dict[str, Any], dict[str, Any]]] = []
        # told of each record once it is written and indexed (`probe run --json` prints then)
        self.on_written: Callable[[dict[str, Any]], None] | None = None
        self._report_starts: dict[str, float] = {}  # report id -> test_start_time
        self._db = self._open_index()

    def _open_index(self) -> sqlite3.Connection:
        index = self.out_dir / "index.sqlite"
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(index, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use results folder {self.out_dir}: {reason(exc)}") from exc
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            self.check_writable()  # a read-only folder says so, rather than blame the index
            raise StoreError(f"cannot use the results index {index}: {reason(exc)} (move it away;"
                             " `Store.reindex` rebuilds it from the JSON lines)") from exc
        return db

    def check_writable(self) -> None:
        """Raises StoreError unless a file can be made in the folder (what `run` needs; root
        ignores permission bits, so this tries rather than asks)."""
        probe = self.out_dir / f".probe-write-test-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"results folder {self.out_dir} is not writable: {reason(exc)}"
                             ) from exc

    def _ensure_folder(self) -> None:
        """A folder removed under a running store (a daemon's) is made again, with a new index."""
        if not self.out_dir.is_dir():
            self._db.close()
            self._db = self._open_index()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    def path_for(self, start_time: float) -> Path:
        return self.out_dir / f"measurements-{time.strftime('%Y-%m-%d', time.gmtime(start_time))}.jsonl"

    def append(self, m: TargetMeasurement, report_id: str) -> dict[str, Any]:
        """Writes one judged measurement (durably: now, or with its batch) and indexes it;
        returns the record as it is written.

        `scrub_addresses` is read at each call: addresses learnt during a run (the helper's view
        of our public IP) can be added before the targets measured with them are appended."""
        # one test_start_time per report: the run's start its id carries, else its first target's
        start = self._report_starts.get(report_id)
        if start is None:  # parsed once per report, not per record
            start = self._report_starts[report_id] = report_start(report_id) or m.start_time
        return self.append_record(to_ooni(m, report_id, self.vantage, test_start_time=start), m)

    def append_record(self, record: dict[str, Any], m: TargetMeasurement,
                      vantage: str | None = None) -> dict[str, Any]:
        """Writes one OONI-format record of `m` (made by `append`, or received by a collector
        from vantage `vantage`) durably, indexes it, and returns the record written."""
        text = jsontext.dumps(record, sort_keys=True)
        line = scrub(text, self.scrub_addresses)
        # the record as stored: a parse of the line only when scrubbing changed it
        written = json.loads(line) if line != text else record
        path = self.path_for(m.start_time)
        self._pending.append((path, line, self._row(written, m, path, vantage), written))
        if len(self._pending) >= self.batch:
            self.flush()
        return written

    def flush(self) -> None:
        """Writes the records held so far: per file one write + fsync, then one index
        transaction. On StoreError the records held are dropped (none of them half written)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._ensure_folder()
        for path in dict.fromkeys(p for p, _, _, _ in pending):
            append_lines(path, [line for p, line, _, _ in pending if p == path])
        try:
            with self._db:
                self._db.executemany(_INSERT, [row for _, _, row, _ in pending])
        except sqlite3.Error as exc:  # the records are safe in the JSON lines; reindex restores
            raise StoreError(f"stored {len(pending)} record(s) but could not index them: "
                             f"{reason(exc)}") from exc
        if self.on_written is not None:
            for *_, record in pending:
                self.on_written(record)

    def _index(self, record: dict[str, Any], m: TargetMeasurement, path: Path,
               vantage: str | None = None) -> None:
        with self._db:
            self._db.execute(_INSERT, self._row(record, m, path, vantage))

    def _row(self, record: dict[str, Any], m: TargetMeasurement, path: Path,
             vantage: str | None = None) -> dict[str, Any]:
        keys = record["test_keys"]
        throttling = keys.get("throttling") or {}
        return {
            "report_id": record["report_id"], "input": record["input"],
            "domain": m.target.domain, "category": m.target.category,
            "vantage": vantage or self.vantage.name, "asn": record["probe_asn"], "cc": record["probe_cc"],
            "start_time": m.start_time, "verdict": keys["verdict"], "blocking": probe_blocking(keys),
            "failure": keys["failure"], "rule": keys["rule"],
            "rate_bps": throttling.get("rate_bps"),
            "control_rate_bps": throttling.get("control_rate_bps"),
            "ratio": throttling.get("ratio"), "method": throttling.get("method"),
            "file": path.name,
        }

    # --- queries ----------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first: report_id, vantage, start/end, counts by verdict."""
        self.flush()
        heads = self._db.execute(
            "SELECT report_id, vantage, MIN(start_time) AS start_time, MAX(start_time) AS end_time,"
            " COUNT(*) AS targets FROM measurements GROUP BY report_id"
            " ORDER BY MIN(start_time) DESC LIMIT ?", (limit,)).fetchall()
        runs = []
        for head in heads:
            counts = self._db.execute(
                "SELECT verdict, COUNT(*) FROM measurements WHERE report_id = ? GROUP BY verdict",
                (head["report_id"],)).fetchall()
            runs.append({**dict(head), "counts": {v: n for v, n in counts}})
        return runs

    def latest(self, report_id: str | None = None) -> list[dict[str, Any]]:
        """The rows of one run (by default the latest), in the order they were stored."""
        self.flush()
        if report_id is None:
            newest = self.runs(1)
            if not newest:
                return []
            report_id = newest[0]["report_id"]
        rows = self._db.execute("SELECT * FROM measurements WHERE report_id = ? ORDER BY id",
                                (report_id,)).fetchall()
        return [dict(r) for r in rows]

    def history(self, domain: str, vantage: str | None = None, limit: int = 100
                ) -> list[dict[str, Any]]:
        """Past rows for a domain (from this vantage unless another is named), newest first."""
        self.flush()
        rows = self._db.execute(
            "SELECT * FROM measurements WHERE domain = ? AND vantage = ?"
            " ORDER BY start_time DESC, id DESC LIMIT ?",
            (domain, vantage or self.vantage.name, limit)).fetchall()
        return [dict(r) for r in rows]

    def control_rate_history(self, domain: str, limit: int = 500) -> list[tuple[float, float]]:
        """(start_time, control rate in bit/s) of this vantage's past throughput tests of a
        domain, oldest first: what the runner's baseline is made of."""
        self.flush()
        rows = self._db.execute(
            "SELECT start_time, control_rate_bps FROM measurements WHERE domain = ?"
            " AND vantage = ? AND control_rate_bps IS NOT NULL"
            " ORDER BY start_time DESC, id DESC LIMIT ?",
            (domain, self.vantage.name, limit)).fetchall()
        return [(row[0], row[1]) for row in reversed(rows)]

    def count(self) -> int:
        """Rows in the index."""
        return self._db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    def reindex(self) -> int:
        """Rebuilds the index from the JSON-lines files; returns the number of rows."""
        self.flush()
        with self._db:
            self._db.execute("DELETE FROM measurements")
        count = 0
        for path in sorted(self.out_dir.glob("measurements-*.jsonl")):
            for record in read_records(path):
                try:
                    m = from_ooni(record)
                except Exception:  # noqa: BLE001 - an unreadable record is left out
                    continue
                self._index(record, m, path, record["annotations"].get("vantage", ""))
                count += 1
        return count

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored record, oldest file first."""
        self.flush()
        for path in sorted(self.out_dir.glob("measurements-*.jsonl")):
            yield from read_records(path)


def local_addresses() -> set[str]:
    """This host's interface addresses (to scrub), without loopback; best effort, never raises."""
    found: set[str] = set()
    try:
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, timeout=5, check=True)
        for link in json.loads(out.stdout):
            found.update(a["local"] for a in link.get("addr_info", []) if "local" in a)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, KeyError):
        pass
    with contextlib.suppress(OSError):
        found.update(str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None))
    return {a for a in found if not _loopback(a)}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return True
