"""Which stored records a report covers: one run (by id, default the latest) or everything since
a date. Every record is scrubbed again before anything reads it (the store already scrubbed the
addresses it knew; a record from an older version or another tool may carry a volunteer's
address as `probe_ip`, and this machine's own addresses are known here too)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probe.model import TargetMeasurement
from probe.results.ooni import from_ooni
from probe.results.scrub import scrub
from probe.results.store import Store, local_addresses, read_records

_NOT_AN_ADDRESS = {"127.0.0.1", "", None}


class NothingToReport(Exception):
    """No stored record matches (str: what was looked for)."""


@dataclass(frozen=True)
class Stored:
    """A record as stored (scrubbed again) and the measurement it was made from."""

    record: dict[str, Any]
    measurement: TargetMeasurement


def _since_files(out_dir: Path, since: datetime) -> list[Path]:
    """The daily files that can hold measurements started at or after `since` (UTC)."""
    day = since.strftime("%Y-%m-%d")
    return [p for p in sorted(out_dir.glob("measurements-*.jsonl"))
            if p.stem.removeprefix("measurements-") >= day]


def _run_files(store: Store, report_id: str | None) -> tuple[str, list[Path]]:
    if not store.runs(1) and any(store.out_dir.glob("measurements-*.jsonl")):
        store.reindex()  # JSON lines copied without their index (sent by a volunteer)
    rows = store.latest(report_id)
    if not rows:
        raise NothingToReport(f"no run {report_id} in {store.out_dir}" if report_id
                              else f"no results in {store.out_dir}")
    return rows[0]["report_id"], sorted({store.out_dir / row["file"] for row in rows})


def scrubbed(records: Iterable[dict[str, Any]], addresses: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Each record with the given addresses, and its own probe_ip, replaced everywhere."""
    known = set(addresses)
    for record in records:
        own = {record.get("probe_ip")} - _NOT_AN_ADDRESS
        text = scrub(json.dumps(record, ensure_ascii=False), known | own)  # type: ignore[operator]
        yield json.loads(text)


def _measurements(records: Iterable[dict[str, Any]]) -> list[Stored]:
    found = []
    for record in records:
        try:
            found.append(Stored(record, from_ooni(record)))
        except Exception:  # noqa: BLE001 - an old or damaged record must not stop a report
            continue
    return found


def gather(out_dir: Path, report_id: str | None = None, since: datetime | None = None,
           scrub_addresses: Iterable[str] | None = None) -> list[Stored]:
    """The records of one run (`report_id`, default the latest) or of every run since `since`,
    oldest first. `scrub_addresses` defaults to this machine's own addresses."""
    if not Path(out_dir).is_dir():
        raise NothingToReport(f"no results folder {out_dir}")
    addresses = local_addresses() if scrub_addresses is None else set(scrub_addresses)
    store = Store(out_dir, vantage="")
    try:
        if since is not None:
            start = since.timestamp()
            records = (r for p in _since_files(store.out_dir, since) for r in read_records(p))
            chosen = [s for s in _measurements(scrubbed(records, addresses))
                      if s.measurement.start_time >= start]
            wanted = f"no results since {since:%Y-%m-%d %H:%M} UTC in {out_dir}"
        else:
            run, files = _run_files(store, report_id)
            records = (r for p in files for r in read_records(p) if r.get("report_id") == run)
            chosen = _measurements(scrubbed(records, addresses))
            wanted = f"no readable records of run {run} in {out_dir}"
    finally:
        store.close()
    if not chosen:
        raise NothingToReport(wanted)
    return sorted(chosen, key=lambda s: s.measurement.start_time)


def parse_since(text: str) -> datetime:
    """`2026-11-01` or `2026-11-01T12:00` (UTC unless an offset is given)."""
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
