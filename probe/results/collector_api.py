"""The collector's wire format (docs/collector.md), shared by the uploader (results/upload.py) and
the collector (server/collector.py): the path, the limits, a measurement's id, and the checks a
received record must pass before it is stored.

A request body is JSON lines, one OONI-format record per line, exactly as the probe stores them.
A record's id (its `uid`) is the SHA-256 of its canonical JSON (keys sorted, no spaces, UTF-8),
so both sides compute it alike and a re-sent record is known whatever its whitespace.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cattrs.errors import BaseValidationError

from probe.model import TargetMeasurement
from probe.results.ooni import TEST_NAME, from_ooni

__all__ = ["CONTENT_TYPE", "MAX_BATCH", "MAX_BODY", "PATH", "BadRecord", "Received",
           "TooMany", "check_record", "parse_batch", "uid"]

PATH = "api/v1/measurements"
CONTENT_TYPE = "application/x-ndjson"
MAX_BODY = 8 << 20  # bytes per request
MAX_BATCH = 200  # records per request

_EPOCH = (946684800.0, 4102444800.0)  # 2000-01-01 and 2100-01-01 UTC, in UNIX seconds
_OONI_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
# the top-level fields a record must carry, each with the check it must pass (results/schema.json)
_FIELDS: dict[str, tuple[str, Any]] = {
    "annotations": ("an object", lambda v: isinstance(v, dict)),
    "data_format_version": ("a string", lambda v: isinstance(v, str)),
    "input": ("an http(s) URL", lambda v: isinstance(v, str) and re.match(r"^https?://[^/\s]+", v)),
    "measurement_start_time": ("YYYY-MM-DD hh:mm:ss", lambda v: isinstance(v, str)
                               and _OONI_TIME.match(v)),
    "probe_asn": ("AS followed by digits", lambda v: isinstance(v, str)
                  and re.match(r"^AS\d+$", v)),
    "probe_cc": ("two capital letters", lambda v: isinstance(v, str)
                 and re.match(r"^[A-Z]{2}$", v)),
    # OONI's convention, and ours: a volunteer's address is never stored, here neither
    "probe_ip": ('"127.0.0.1"', lambda v: v == "127.0.0.1"),
    "probe_network_name": ("a string", lambda v: isinstance(v, str)),
    "report_id": ("letters, digits, _ . -", lambda v: isinstance(v, str)
                  and re.match(r"^[A-Za-z0-9_.-]+$", v)),
    "resolver_ip": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "software_name": ("a string", lambda v: isinstance(v, str)),
    "software_version": ("a string", lambda v: isinstance(v, str)),
    "test_keys": ("an object", lambda v: isinstance(v, dict)),
    "test_name": (f'"{TEST_NAME}"', lambda v: v == TEST_NAME),
    "test_runtime": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "test_start_time": ("YYYY-MM-DD hh:mm:ss", lambda v: isinstance(v, str)
                        and _OONI_TIME.match(v)),
    "test_version": ("a string", lambda v: isinstance(v, str)),
}
# what the results index reads from test_keys (Store._index)
_KEYS: dict[str, tuple[str, Any]] = {
    "verdict": ("a string", lambda v: isinstance(v, str)),
    "failure": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "rule": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "throttling": ("an object or null", lambda v: v is None or isinstance(v, dict)),
}


class BadRecord(ValueError):
    """A record (or a body) the collector refuses; str(err) says why, naming the line."""


class TooMany(BadRecord):
    """More records in one request than the collector takes (answered 413)."""


def uid(record: dict[str, Any]) -> str:
    """The record's id: SHA-256 (hex) of its canonical JSON."""
    canonical = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Received:
    """One checked record: the record, the measurement it rebuilds, its id, its vantage."""

    record: dict[str, Any]
    measurement: TargetMeasurement
    uid: str
    vantage: str


def check_record(record: object) -> Received:
    """The record checked against the shape the probe writes; raises BadRecord naming the
    first field that is wrong."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    for name, checks in (("", _FIELDS), ("test_keys.", _KEYS)):
        data = record if not name else record["test_keys"]
        for key, (expected, ok) in checks.items():
            if key not in data:
                raise BadRecord(f"{name}{key} is missing")
            if not ok(data[key]):
                raise BadRecord(f"{name}{key} must be {expected}")
    _check_index_values(record["test_keys"])
    vantage = record["annotations"].get("vantage")
    if not isinstance(vantage, str) or not vantage:
        raise BadRecord("annotations.vantage must be a non-empty string")
    try:  # the typed record the index is built from (and history, re-judging) must come back
        measurement = from_ooni(record)
    except (BaseValidationError, KeyError, TypeError, ValueError, AttributeError, IndexError
            ) as exc:  # the shapes hostile input can take; a bug elsewhere still raises
        raise BadRecord(f"test_keys.evidence does not rebuild a measurement: "
                        f"{type(exc).__name__}") from None
    if not _EPOCH[0] <= measurement.start_time < _EPOCH[1]:  # NaN fails too; names the file
        raise BadRecord("test_keys.evidence.start_time is not a time between 2000 and 2100")
    return Received(record, measurement, uid(record), vantage)


def _check_index_values(keys: dict[str, Any]) -> None:
    """What the index copies from test_keys must be a single value (SQLite binds no list)."""
    throttling = keys["throttling"] or {}
    values = {f"test_keys.throttling.{k}": throttling.get(k)
              for k in ("rate_bps", "control_rate_bps", "ratio", "method")}
    values["test_keys.probe_blocking"] = keys.get("probe_blocking")
    values["test_keys.blocking"] = keys.get("blocking")
    for name, value in values.items():
        if not (value is None or isinstance(value, str | int | float)):
            raise BadRecord(f"{name} must be a single value")


def parse_batch(body: bytes, max_batch: int = MAX_BATCH) -> list[Received]:
    """A request body as checked records; raises BadRecord ("line N: why") on the first bad
    line, or when it holds no record or more than `max_batch` (TooMany)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("the body is not UTF-8") from None
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        raise BadRecord("no measurement in the body (one JSON object per line)")
    if len(lines) > max_batch:
        raise TooMany(f"{len(lines)} measurements in one request; at most {max_batch}")
    received = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise BadRecord(f"line {number}: not JSON") from None
        try:
            received.append(check_record(record))
        except BadRecord as exc:
            raise BadRecord(f"line {number}: {exc}") from None
    return received
