"""Central results, the collector (`probe serve --collector`) against the real server on
loopback: a round trip, a re-sent record stored once, bad tokens, malformed and oversized
bodies refused with nothing stored, crash recovery, the tokens file, `probe results` reading
the collector's folder. The upload's own tests are in test_upload.py (they share the helpers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import jsonschema
import pytest
from test_store import VANTAGE, all_cases, validate

from probe.results import collector_api as api
from probe.results.ooni import to_ooni
from probe.results.outbox import Cursor
from probe.results.store import Store, read_records
from probe.results.upload import UploadSettings, upload
from probe.server.app import ServerConfig, start
from probe.server.collector import COLLECTOR, CollectorConfig, CollectorError, Inbox, Tokens

ROOT = Path(__file__).parents[1]
TOKEN = "moscow-token-0123456789abcdef"
OTHER_TOKEN = "berlin-token-0123456789abcdef"
REPORTS = [f"20210314T00000{i}Z_probe_web_RU_8359_n1_0123456789abcde{i}" for i in range(3)]


def vantage_results(out: Path, reports: list[str] = REPORTS) -> list[dict]:
    """A vantage's results folder as `probe run` leaves it: every scenario, once per report."""
    with Store(out, VANTAGE) as store:
        return [store.append(m, report) for report in reports for m in all_cases().values()]


def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# vantage token\n{VANTAGE.name} {TOKEN}\nberlin-dtag {OTHER_TOKEN}\n")
    return path


def stored_lines(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("measurements-*.jsonl")) for r in read_records(p)]


def uids(records: list[dict]) -> list[str]:
    return sorted(api.uid(r) for r in records)


@asynccontextmanager
async def collector(tmp_path: Path, body_timeout: float = 10.0, **limits):
    config = ServerConfig(body_timeout=body_timeout, collector=CollectorConfig(
        tmp_path / "collector", Tokens.load(tokens_file(tmp_path)), **limits))
    runner, port = await start(config)
    try:
        yield f"http://127.0.0.1:{port}/", runner.app[COLLECTOR].inbox
    finally:
        await runner.cleanup()


def settings(url: str, token: str = TOKEN, **kw) -> UploadSettings:
    kw.setdefault("backoff", 0.05)
    kw.setdefault("tries", 3)
    kw.setdefault("timeout", 10.0)
    return UploadSettings(collector=url, token=token, **kw)


async def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.post(
            url + api.PATH, data=body, headers=headers) as response:
        return response.status, await response.json()


def body(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


# --- round trip, idempotency ---------------------------------------------------------------------

async def test_round_trip_in_batches_then_probe_results_reads_the_collector(tmp_path: Path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        report = await upload(tmp_path / "vantage", settings(url, batch_records=7))
        assert (report.sent, report.stored, report.duplicates) == (len(sent), len(sent), 0)
        assert report.failure is None and report.pending == 0 and inbox.count() == len(sent)
    got = stored_lines(tmp_path / "collector")
    assert got == sent  # the same records, in order, each once
    for record in got:
        validate(record)  # results/schema.json
    runs = Store(tmp_path / "collector", "").runs()
    assert sorted(r["report_id"] for r in runs) == REPORTS
    assert {r["vantage"] for r in runs} == {VANTAGE.name}
    shown = subprocess.run([sys.executable, "-m", "probe", "results", "--out",
                            str(tmp_path / "collector")], capture_output=True, text=True,
                           timeout=60, cwd=ROOT, env=os.environ | {"COLUMNS": "250"})
    assert shown.returncode == 0, shown.stderr
    assert REPORTS[-1] in shown.stdout and VANTAGE.name in shown.stdout


async def test_a_resent_record_is_stored_once_and_acknowledged(tmp_path: Path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        first = await upload(tmp_path / "vantage", settings(url))
        again = await upload(tmp_path / "vantage", settings(url))  # the cursor: nothing to send
        assert (first.stored, again.sent) == (len(sent), 0)
        Cursor.load(tmp_path / "vantage", settings(url).endpoint).path.unlink()  # cursor lost
        resent = await upload(tmp_path / "vantage", settings(url))
        assert (resent.sent, resent.stored, resent.duplicates) == (len(sent), 0, len(sent))
        status, answer = await post(url, body(sent[0], sent[0]))  # twice in one batch too
        assert status == 200 and answer["stored"] == 0 and answer["duplicates"] == 2
        assert answer["acknowledged"] == [api.uid(sent[0])] * 2
        assert inbox.count() == len(sent)
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent)


# --- refusals: nothing stored ---------------------------------------------------------------------

def nothing_stored(tmp_path: Path, inbox: Inbox) -> bool:
    return inbox.count() == 0 and not list((tmp_path / "collector").glob("*.jsonl"))


async def test_bad_tokens_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1]):
            status, answer = await post(url, body(sent[0]), token)
            assert status == 401 and "token" in answer["error"]
        status, answer = await post(url, body(sent[0]), OTHER_TOKEN)  # another vantage's
        assert status == 403 and "berlin-dtag" in answer["error"]
        report = await upload(tmp_path / "vantage", settings(url, token="x" * 20))
        assert report.final and "401" in report.failure and report.pending == len(sent)
        assert nothing_stored(tmp_path, inbox)


def _mutated(record: dict, path: str, value: object) -> dict:
    record = json.loads(json.dumps(record))
    *parents, last = path.split(".")
    where = record
    for key in parents:
        where = where[key]
    if value is KeyError:
        del where[last]
    else:
        where[last] = value
    return record


BAD_RECORDS = [  # (id, path, value, reason)
    ("no report id", "report_id", KeyError, "report_id is missing"),
    ("real address", "probe_ip", "198.51.100.7", "probe_ip"),
    ("bad asn", "probe_asn", "8359", "probe_asn"),
    ("bad time", "measurement_start_time", "2021-03-15T00:00:00Z", "measurement_start_time"),
    ("other test", "test_name", "web_connectivity", "test_name"),
    ("verdict missing", "test_keys.verdict", KeyError, "test_keys.verdict is missing"),
    ("evidence broken", "test_keys.evidence", {"target": 1}, "evidence"),
    ("no vantage", "annotations.vantage", KeyError, "annotations.vantage"),
    ("start in year 3e12", "test_keys.evidence.start_time", 1e20, "start_time"),
    ("start NaN", "test_keys.evidence.start_time", float("nan"), "start_time"),
    ("a list for the index", "test_keys.throttling.rate_bps", [1], "rate_bps must be a single"),
    ("an object for the index", "test_keys.probe_blocking", {"a": 1}, "probe_blocking must be"),
]


@pytest.mark.parametrize(("path", "value", "reason"), [b[1:] for b in BAD_RECORDS],
                         ids=[b[0] for b in BAD_RECORDS])
def test_a_malformed_record_is_refused_by_the_check_and_the_schema(path, value, reason) -> None:
    record = _mutated(to_ooni(all_cases()["throttled"], REPORTS[0], VANTAGE), path, value)
    with pytest.raises(api.BadRecord, match=reason):
        api.check_record(record)
    # the schema leaves annotations open (the collector needs the vantage its token names)
    # and does not bound the typed record's times (the collector names files after them)
    if path not in ("annotations.vantage", "test_keys.evidence.start_time"):
        with pytest.raises(jsonschema.ValidationError):
            validate(record)


async def test_malformed_bodies_get_400_with_the_reason_and_nothing_is_stored(tmp_path) -> None:
    good = vantage_results(tmp_path / "vantage")[0]
    bad = _mutated(good, "probe_ip", "198.51.100.7")
    cases = [
        (b"{not json\n", "line 1: not JSON"),
        (body([good]), "line 1: not a JSON object"),
        (body(good, bad), "line 2: probe_ip"),  # the good line is not stored either
        (b"\n\n", "no measurement"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"[" * 100_000 + b"\n", "line 1: not JSON"),
        (body(_mutated(good, "test_keys.evidence.start_time", 1e20)), "line 1: test_keys"),
    ]
    async with collector(tmp_path) as (url, inbox):
        for data, reason in cases:
            status, answer = await post(url, data)
            assert status == 400 and reason in answer["error"], (data[:40], answer)
        assert nothing_stored(tmp_path, inbox)


async def test_oversized_bodies_and_batches_get_413_and_nothing_is_stored(tmp_path) -> None:
    records = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path, max_body=64 << 10, max_batch=4) as (url, inbox):
        status, answer = await post(url, b" " * (65 << 10) + body(records[0]))
        assert status == 413 and str(64 << 10) in answer["error"]
        status, answer = await post(url, body(*records[:5]))
        assert status == 413 and "at most 4" in answer["error"]
        assert nothing_stored(tmp_path, inbox)


async def test_a_crash_between_storing_and_keeping_the_id_is_recovered(tmp_path) -> None:
    """Records in the collector's files whose ids were never kept (the crash window) get their
    ids on the next start, so a re-send is acknowledged as a duplicate, and are indexed."""
    sent = vantage_results(tmp_path / "vantage")
    with Store(tmp_path / "collector", "collector") as store:  # written, ids never kept
        for record, m in zip(sent[:4], list(all_cases().values())[:4], strict=True):
            store.append_record(record, m, VANTAGE.name)
    with Inbox(tmp_path / "collector") as inbox:
        assert inbox.recovered == 4 and inbox.count() == 4
        with pytest.raises(CollectorError, match="another collector"):
            Inbox(tmp_path / "collector")
    async with collector(tmp_path) as (url, inbox):
        report = await upload(tmp_path / "vantage", settings(url))
        assert (report.stored, report.duplicates) == (len(sent) - 4, 4)
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent)
    assert sum(r["targets"] for r in Store(tmp_path / "collector", "").runs()) == len(sent)


# --- the tokens file, the CLI ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("moscow\n", ":1: expected `VANTAGE TOKEN`"),
    ("# only a comment\n", "no token"),
    ("moscow short\n", ":1: token shorter than 16"),
    (f"a {TOKEN}\nb {TOKEN}\n", ":2: this token is given twice"),
])
def test_a_bad_tokens_file_is_one_line_naming_the_line(tmp_path, text, message) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(CollectorError, match=message):
        Tokens.load(path)


def test_tokens_map_to_vantages(tmp_path: Path) -> None:
    tokens = Tokens.load(tokens_file(tmp_path))
    assert tokens.vantage_for(TOKEN) == VANTAGE.name
    assert tokens.vantage_for(OTHER_TOKEN) == "berlin-dtag"
    assert tokens.vantage_for("") is None and tokens.vantage_for(TOKEN + "x") is None
    assert TOKEN not in repr(tokens)  # only digests are kept


def test_serve_refuses_half_a_collector_or_a_bad_tokens_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from probe.cli.serve import serve

    result = CliRunner().invoke(serve, ["--insecure-http", "--collector", str(tmp_path)])
    assert result.exit_code == 2 and "go together" in result.output
    (tmp_path / "tokens").write_text("moscow short\n")
    result = CliRunner().invoke(serve, ["--insecure-http", "--collector", str(tmp_path / "c"),
                                        "--collector-tokens", str(tmp_path / "tokens")])
    assert result.exit_code == 2 and "shorter than 16" in result.output
    with Inbox(tmp_path / "taken"):  # one collector per folder
        result = CliRunner().invoke(serve, ["--insecure-http", "--port", "0", "--collector",
                                            str(tmp_path / "taken"), "--collector-tokens",
                                            str(tokens_file(tmp_path))])
    assert result.exit_code == 2 and "another collector uses this folder" in result.output


def test_every_stored_scenario_passes_the_collectors_check() -> None:
    for name, m in all_cases().items():
        received = api.check_record(to_ooni(m, REPORTS[0], VANTAGE))
        assert received.vantage == VANTAGE.name and received.measurement == m, name
    for line in (ROOT / "tests" / "data" / "ooni_previous_format.jsonl").read_text().splitlines():
        assert api.check_record(json.loads(line)).vantage == "moscow-mts"  # the previous format


def test_a_folder_the_collector_cannot_use_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CollectorError, match="file"):
        Inbox(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "collector.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(CollectorError, match="cannot use it"):
        Inbox(tmp_path / "bad")
    (tmp_path / "bad" / "collector.sqlite").unlink()
    with Inbox(tmp_path / "bad") as inbox:  # the lock was released on the way out
        assert inbox.count() == 0


async def test_a_record_written_but_not_indexed_keeps_its_id(tmp_path, monkeypatch) -> None:
    """The index write fails after the record reached its file (a full disk: mocked, as root
    cannot fill a disk it does not own): 503, a re-send is a duplicate, not a second line, and
    the next start rebuilds the index."""
    import sqlite3

    sent = vantage_results(tmp_path / "vantage", REPORTS[:1])[:2]
    async with collector(tmp_path) as (url, inbox):
        class FullIndex:  # the index connection, but its inserts fail as on a full disk
            def __init__(self, db: sqlite3.Connection) -> None:
                self._db = db

            def __getattr__(self, name: str):
                return getattr(self._db, name)

            def __enter__(self):
                return self._db.__enter__()

            def __exit__(self, *exc):
                return self._db.__exit__(*exc)

            def executemany(self, *_args, **_kw):
                raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(inbox.store, "_db", FullIndex(inbox.store._db))
        status, answer = await post(url, body(sent[0]))
        assert status == 503 and "retry later" in answer["error"]
        monkeypatch.undo()
        status, answer = await post(url, body(*sent))
        assert status == 200 and (answer["stored"], answer["duplicates"]) == (1, 1)
        assert inbox.store.count() == 1  # the first is in its file, not in the index
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent)
    with Inbox(tmp_path / "collector") as inbox:
        assert inbox.store.count() == inbox.count() == 2
