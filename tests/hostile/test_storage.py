"""Broken storage, for real: a full disk (a 512 KiB tmpfs), a read-only folder (a tmpfs remounted
read-only: root ignores permission bits), a folder removed under a running store or daemon.
Nothing acknowledged is lost, nothing is torn, the run stops with one line and exit status 3,
and the daemon remakes its folder or counts what it could not store.

The measurements are factory records (measuring is not what these tests are about; see
test_bad_input.py): `probe.runner.measure_target` is replaced where the real CLI runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import factories as F
import pytest
from click.testing import CliRunner

from probe import runner
from probe.cli import main
from probe.model import TargetMeasurement, Vantage
from probe.monitoring.daemon import Daemon, Schedule, bound_port, start_metrics_server
from probe.results.store import Store, StoreError, read_records
from probe.verdict import judge

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
VANTAGE = Vantage(name="hostile", asn="AS65001", cc="RU")
REPORT = "20260101T000000Z_probe_web_RU_65001_n1_0123456789abcdef"


def record(domain: str) -> TargetMeasurement:
    m = F.measurement(tgt=F.target(domain))
    return dataclasses.replace(m, verdict=judge(m))


def lines_of(folder: Path) -> list[bytes]:
    return [line for f in sorted(folder.glob("*.jsonl")) for line in f.read_bytes().split(b"\n")
            if line]


def assert_nothing_torn(folder: Path) -> None:
    for f in folder.glob("*.jsonl"):
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f.name} ends in a torn record"
        for line in data.split(b"\n"):
            if line:
                json.loads(line)  # every line whole


def _mount(where: Path, options: str) -> None:
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True,
                   timeout=10)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB filesystem of our own, unmounted afterwards."""
    disk = tmp_path / "disk"
    _mount(disk, "size=512k")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=10)


def read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=10)


@pytest.fixture
def factory_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    async def measure(target, plan, state=None):
        return record(target.domain)

    monkeypatch.setattr(runner, "measure_target", measure)


@root_only
def test_disk_full_stops_the_store_without_tearing_or_losing_a_record(tiny_disk: Path,
                                                                      hostile) -> None:
    acked: list[str] = []
    with hostile.case("store: disk full") as case, Store(tiny_disk, VANTAGE) as store:
        error = None
        for i in range(500):  # 512 KiB holds a few dozen records at most
            try:
                store.append(record(f"t{i}.example"), REPORT)
            except StoreError as exc:
                error = exc
                break
            acked.append(f"https://t{i}.example/")
        present = {json.loads(line)["input"] for line in lines_of(tiny_disk)}
        case.lost = len(set(acked) - present)
    assert error is not None and "\n" not in str(error)
    assert "No space left" in str(error) or "disk is full" in str(error)  # JSON lines or index
    assert len(acked) >= 1 and case.lost == 0
    assert_nothing_torn(tiny_disk)


@root_only
def test_run_on_a_full_disk_exits_3_with_one_line(tmp_path: Path, tiny_disk: Path, hostile,
                                                 factory_measuring) -> None:
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n" + "".join(f"  - t{i}.example\n" for i in range(300)))
    with hostile.case("run: disk full") as case:
        result = CliRunner().invoke(main, ["run", "--targets", str(targets), "--out",
                                           str(tiny_disk), "--json", "--concurrency", "4"])
        printed = result.stdout.splitlines()  # --json prints a target once it is stored
        stored = {json.loads(line)["input"] for line in lines_of(tiny_disk)}
        case.lost = len({json.loads(line)["input"] for line in printed} - stored)
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("No space left" in errors[0] or "full" in errors[0]), errors
    assert f"after {len(printed)} of 300 targets" in errors[0]
    assert 0 < len(printed) < 300 and case.lost == 0
    assert_nothing_torn(tiny_disk)


@root_only
def test_read_only_folder_at_start_up_is_one_line_and_exit_2(tmp_path: Path, tiny_disk: Path,
                                                             hostile, factory_measuring) -> None:
    with Store(tiny_disk, VANTAGE) as store:
        store.append(record("before.example"), REPORT)
    read_only(tiny_disk)
    targets = tmp_path / "t.yaml"
    targets.write_text("targets: [a.example]\n")
    with hostile.case("run: read-only results folder") as case:
        result = CliRunner().invoke(main, ["run", "--targets", str(targets), "--out",
                                           str(tiny_disk)])
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
        case.lost = 1 - len(lines_of(tiny_disk))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out: ") and "not writable" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and case.lost == 0


@root_only
def test_a_short_write_is_cut_back_so_nothing_is_torn(tiny_disk: Path, hostile) -> None:
    with hostile.case("store: short write") as case, Store(tiny_disk, VANTAGE) as store:
        store.append(record("before.example"), REPORT)
        [jsonl] = tiny_disk.glob("*.jsonl")
        size = jsonl.stat().st_size
        with open(tiny_disk / "filler", "wb", buffering=0) as filler:  # every free page
            for _ in range(1024):  # bounded: 4 MiB at most
                try:
                    filler.write(b"x" * 4096)
                except OSError:
                    break
        # the record (6 KiB) does not fit in the slack of the file's last page: a short write
        with pytest.raises(StoreError, match="short write|No space left"):
            store.append(record("after.example"), REPORT)
        case.lost = 1 - len(lines_of(tiny_disk))
    assert jsonl.stat().st_size == size and case.lost == 0
    assert_nothing_torn(tiny_disk)


@root_only
def test_folder_turned_read_only_mid_run_keeps_earlier_records(tiny_disk: Path, hostile) -> None:
    out = tiny_disk / "out"
    with hostile.case("store: read-only mid-run") as case, Store(out, VANTAGE) as store:
        store.append(record("before.example"), REPORT)
        _mount(out, "ro,size=64k")  # the folder now shows a read-only filesystem
        try:
            with pytest.raises(StoreError, match="Read-only file system"):
                store.append(record("after.example"), REPORT)
        finally:
            subprocess.run(["umount", str(out)], check=True, timeout=10)
        case.lost = 1 - len(lines_of(out))
    assert case.lost == 0
    assert_nothing_torn(out)


def test_a_vanished_folder_is_made_again_with_its_index(tmp_path: Path, hostile) -> None:
    out = tmp_path / "out"
    with hostile.case("store: folder removed") as case, Store(out, VANTAGE) as store:
        store.append(record("before.example"), REPORT)
        shutil.rmtree(out)
        store.append(record("after.example"), REPORT)
        rows = store.latest(REPORT)
        case.lost = 1 - len(list(read_records(next(out.glob("*.jsonl")))))
    assert [r["domain"] for r in rows] == ["after.example"]  # a new index, holding the new one
    assert (out / "index.sqlite").exists() and case.lost == 0


class Runs:
    """The daemon's injected runner: every target measured as a factory record."""

    async def __call__(self, targets, on_result):
        results = [record(t.domain) for t in targets]
        for m in results:
            on_result(m)
        return results


async def _store_errors(port: int) -> float:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
        text = await r.text()
    [line] = [x for x in text.splitlines() if x.startswith("censorprobe_store_errors_total{")]
    assert 'vantage="hostile"' in line
    return float(line.split()[1])


async def test_daemon_remakes_its_folder_or_counts_what_it_could_not_store(
        tmp_path: Path, hostile, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "results"
    store = Store(out, VANTAGE)
    targets = [F.target(f"t{i}.example") for i in range(5)]
    daemon = Daemon(targets, Runs(), VANTAGE, Schedule(max_age_runs=1e9),
                    open_sink=lambda: lambda m: store.append(m, REPORT))
    metrics = await start_metrics_server(daemon.board, "127.0.0.1", 0)
    try:
        with hostile.case("daemon: folder removed, then not re-creatable") as case:
            assert await daemon.run_once() is True
            shutil.rmtree(out)
            assert await daemon.run_once() is True  # remade
            assert len(lines_of(out)) == 5 and await _store_errors(bound_port(metrics)) == 0
            shutil.rmtree(out)
            out.write_text("a file where the folder was")  # now it cannot be made again
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="probe.monitoring.daemon"):
                assert await daemon.run_once() is False
                assert await daemon.run_once() is False
            case.traceback = any(r.exc_info for r in caplog.records)
            errors = await _store_errors(bound_port(metrics))
    finally:
        await metrics.cleanup()
        store.close()
    assert errors == 10  # 5 targets, two runs
    assert len(daemon.board.snapshot().measurements) == 5  # the metrics still have them
    assert daemon.board.snapshot().runs.failures == 2
    # one line per run, no traceback per target
    assert len(caplog.records) == 2 and not case.traceback
    message = caplog.records[0].getMessage()
    assert "5 result(s) could not be stored" in message and "cannot use results folder" in message
