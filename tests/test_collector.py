"""Central results: the collector (`probe serve --collector`) and the upload, against the real
server on loopback. Round trip, a re-sent record stored once, bad tokens, malformed and
oversized bodies refused with nothing stored, an outage (the collector killed mid-upload, then
started again) resumed with nothing lost, and `probe results` reading the collector's folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
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
from probe.results.upload import BackgroundUpload, UploadSettings, upload
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


async def test_the_upload_skips_what_the_collector_refuses_and_sends_the_rest(tmp_path) -> None:
    """A record refused on its own (here: one the collector finds malformed, one too large)
    is logged and skipped; the batches around it still go through."""
    sent = vantage_results(tmp_path / "vantage")
    (path,) = (tmp_path / "vantage").glob("*.jsonl")
    huge = _mutated(sent[1], "annotations.padding", "x" * (70 << 10))
    with open(path, "a") as f:
        f.write(json.dumps(_mutated(sent[0], "probe_asn", "8359")) + "\n" + json.dumps(huge) + "\n")
    more = vantage_results(tmp_path / "vantage", ["20210315T000000Z_probe_web_RU_8359_n1_ff"])
    async with collector(tmp_path, max_body=64 << 10) as (url, inbox):
        report = await upload(tmp_path / "vantage", settings(url, batch_records=5))
        assert report.failure is None and report.refused == 2 and report.pending == 0
        assert report.stored == inbox.count() == len(sent) + len(more)
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent + more)


# --- outage, crash, retries ------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cli_collector(tmp_path: Path, port: int) -> subprocess.Popen:
    """The real `probe serve --collector`, waited for (bounded) until it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "probe", "serve", "--insecure-http", "--port", str(port),
         "--collector", str(tmp_path / "collector"), "--collector-tokens",
         str(tokens_file(tmp_path))], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    said = ""
    for _ in range(5):  # a line on ids recovered after a crash may come first
        said += proc.stderr.readline()  # bounded by the test timeout; printed once listening
        if "listening on" in said:
            return proc
    raise AssertionError(said + (proc.stderr.read() if proc.poll() is not None else ""))


async def test_an_outage_mid_upload_resumes_with_nothing_lost_or_doubled(tmp_path) -> None:
    """The collector is killed (SIGKILL: no clean shutdown) while an upload runs; the upload
    stops with what is left pending; the collector is started again on the same folder and
    the next upload sends the rest. Every record ends up stored exactly once."""
    sent = vantage_results(tmp_path / "vantage", [f"{r}{n}" for r in REPORTS for n in range(4)])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_cli_collector(tmp_path, port)
    try:
        task = asyncio.ensure_future(upload(tmp_path / "vantage", settings(url, batch_records=1)))
        deadline = time.monotonic() + 60
        while len(stored_lines(tmp_path / "collector")) < 5 and time.monotonic() < deadline:
            assert not task.done(), "the upload ended before the outage"
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        during = await asyncio.wait_for(task, 60)
        assert during.failure and "cannot reach the collector" in during.failure
        assert not during.final and 0 < during.pending < len(sent)
        proc = start_cli_collector(tmp_path, port)
        after = await upload(tmp_path / "vantage", settings(url))
        assert after.failure is None and after.pending == 0
        assert during.sent + after.sent >= len(sent)  # the batch cut by the kill may go twice
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent)  # each once
    with Inbox(tmp_path / "collector") as inbox:
        assert inbox.count() == len(sent) and inbox.recovered == 0


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


async def test_retries_with_backoff_carry_a_short_outage(tmp_path) -> None:
    """A collector answering 503 twice (then itself again) costs two retries, not the batch;
    a collector that never recovers ends the upload after `tries`, nothing skipped."""
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        answers = [503, 503]
        seen: list[int] = []

        async def flaky(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
            seen.append(1)
            if answers:
                return aiohttp.web.json_response({"error": "busy"}, status=answers.pop())
            async with aiohttp.ClientSession() as session, session.post(
                    url + api.PATH, data=await request.read(),
                    headers={"Authorization": request.headers["Authorization"]}) as r:
                return aiohttp.web.json_response(await r.json(), status=r.status)

        app = aiohttp.web.Application(client_max_size=api.MAX_BODY)
        app.router.add_post("/" + api.PATH, flaky)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
        front = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        try:
            report = await upload(tmp_path / "vantage", settings(front, batch_records=1000))
            assert report.failure is None and report.sent == len(sent) and len(seen) == 3
            answers[:] = [503] * 3
            (tmp_path / "vantage" / "measurements-2099-01-01.jsonl").write_text(
                json.dumps(sent[0] | {"report_id": "late"}) + "\n")
            stuck = await upload(tmp_path / "vantage", settings(front, tries=3))
            assert "503" in stuck.failure and stuck.pending == 1 and not stuck.final
        finally:
            await runner.cleanup()
        assert inbox.count() == len(sent)


async def test_the_daemons_background_upload_never_makes_a_run_wait(tmp_path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        background = BackgroundUpload(tmp_path / "vantage", settings(url))
        background.kick()
        first = background.task
        background.kick()  # one under way: not a second at once, the same once more after
        assert background.task is first and not first.done()
        report = await asyncio.wait_for(first, 60)
        assert report.failure is None and report.sent == 0 and inbox.count() == len(sent)


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


def test_probe_upload_exit_statuses(tmp_path: Path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"

    def probe_upload(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "probe", "upload", "--out",
                               str(tmp_path / "vantage"), "--collector", url, *args],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=os.environ | {"PROBE_COLLECTOR_TOKEN": token})

    down = probe_upload()
    assert down.returncode == 4 and "cannot reach the collector" in down.stderr
    proc = start_cli_collector(tmp_path, port)
    try:
        refused = probe_upload(token="y" * 20)
        assert refused.returncode == 2 and "401" in refused.stderr
        done = probe_upload()
        assert done.returncode == 0, done.stderr
        assert f"uploaded {len(sent)} measurement(s) ({len(sent)} new" in done.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


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


async def _until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return condition()


async def test_the_daemon_uploads_after_each_run_even_a_failed_one(tmp_path: Path) -> None:
    """`probe daemon --collector`: the runner is wrapped so each run, done or failed, is
    followed by a background upload of what it stored."""
    from probe.cli.daemon import _then_upload

    runs: list[int] = []

    async def run(_targets, _on_result):
        runs.append(len(vantage_results(tmp_path / "vantage", [REPORTS[len(runs)]])))
        if len(runs) == 2:
            raise RuntimeError("the run failed after storing")
        return []

    async with collector(tmp_path) as (url, inbox):
        wrapped = _then_upload(run, tmp_path / "vantage", settings(url))
        assert await wrapped([], None) == [] and inbox.count() < runs[0]  # not waited for
        assert await _until(lambda: inbox.count() == runs[0])
        with pytest.raises(RuntimeError):
            await wrapped([], None)
        assert await _until(lambda: inbox.count() == sum(runs))


def test_the_config_file_configures_upload_and_hides_the_token(tmp_path: Path) -> None:
    config = tmp_path / "probe.toml"
    config.write_text(f'[upload]\ncollector = "https://collector.test"\ntoken = "{TOKEN}"\n'
                      '[run]\nout = "res"\n')
    shown = subprocess.run([sys.executable, "-m", "probe", "config", "--config", str(config),
                            "upload"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()[1:]}
    assert rows["upload.collector"][0] == '"https://collector.test"'
    assert rows["upload.token"][0] == '"***"' and TOKEN not in shown.stdout
    assert rows["run.out"][0] == json.dumps(str(tmp_path / "res"))


def test_the_outbox_waits_for_a_line_being_written_and_passes_a_torn_one(tmp_path: Path) -> None:
    from probe.results.outbox import batches, pending

    sent = vantage_results(tmp_path / "vantage", REPORTS[:1])
    (path,) = (tmp_path / "vantage").glob("*.jsonl")
    whole = path.read_bytes()
    line = json.dumps(sent[0] | {"report_id": "next"}).encode()
    path.write_bytes(whole + b'{"torn": \n' + line[:100])  # a crash's torn line, then a write
    items = list(pending(tmp_path / "vantage", {}))
    assert [i.uid for i in items] == [api.uid(r) for r in sent]  # neither the torn nor the half
    assert items[-1].end == len(whole)  # the cursor stops before the half line
    with open(path, "ab") as f:
        f.write(line[100:] + b"\n")
    (last,) = pending(tmp_path / "vantage", {path.name: items[-1].end})
    assert last.uid == api.uid(sent[0] | {"report_id": "next"})
    sizes = [len(b) for b in batches(iter(items), 4, 1 << 20)]
    assert sizes == [4] * (len(items) // 4) + ([len(items) % 4] if len(items) % 4 else [])
    assert [len(b) for b in batches(iter(items), 100, 1)] == [1] * len(items)  # each alone


async def test_two_uploads_to_one_collector_never_run_at_once(tmp_path: Path) -> None:
    sent = vantage_results(tmp_path / "vantage")
    async with collector(tmp_path) as (url, inbox):
        first = asyncio.ensure_future(upload(tmp_path / "vantage", settings(url)))
        await asyncio.sleep(0)  # the first holds the lock from its first step
        second = await upload(tmp_path / "vantage", settings(url))
        assert second.failure == "another upload to this collector is under way"
        assert second.sent == 0 and not second.final
        assert (await asyncio.wait_for(first, 60)).sent == len(sent) == inbox.count()


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
        def failing(*_args, **_kw):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(inbox.store, "_index", failing)
        status, answer = await post(url, body(sent[0]))
        assert status == 503 and "retry later" in answer["error"]
        monkeypatch.undo()
        status, answer = await post(url, body(*sent))
        assert status == 200 and (answer["stored"], answer["duplicates"]) == (1, 1)
        assert inbox.store.count() == 1  # the first is in its file, not in the index
    assert uids(stored_lines(tmp_path / "collector")) == uids(sent)
    with Inbox(tmp_path / "collector") as inbox:
        assert inbox.store.count() == inbox.count() == 2
