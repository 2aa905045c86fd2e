"""Central results, the vantage side: `probe upload` and the daemon's background upload against
the real collector on loopback. Refused records skipped, an outage (the collector killed
mid-upload, then started again) resumed with nothing lost or doubled, retries with backoff,
the daemon never waiting, the cursor and what is left to send."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from test_collector import (
    REPORTS,
    ROOT,
    TOKEN,
    _mutated,
    api,
    collector,
    settings,
    stored_lines,
    tokens_file,
    uids,
    vantage_results,
)

from probe.results.upload import BackgroundUpload, upload
from probe.server.collector import Inbox


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


