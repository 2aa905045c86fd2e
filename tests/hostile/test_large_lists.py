"""Large lists stream: the memory of loading, validating and running a list follows the
concurrency, not the list. A 1 M-row CSV validates, and a ~50 MB YAML whose last line is bad is
refused naming that line, in about the peak RSS of a 1 k-row list; the runner pulls targets
from the iterator with at most `concurrency` in flight and keeps no results.

Peak RSS is the child's (resource.getrusage(RUSAGE_CHILDREN) read by a small parent process,
so that no other child of the test run counts).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import factories as F
import pytest

from probe import runner
from probe.runner import RunPlan, run_targets

CSV_HEADER = "url,category_code,category_description,date_added,source,notes\n"
SLACK_MB = 30  # a large list may cost this much more than a small one (allocator, caches)

# Runs `code` in a grandchild and prints the grandchild's peak RSS (KiB) after its output.
PARENT = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], text=True,
                      capture_output=True)
print(done.stdout, end="")
print(done.stderr, end="", file=sys.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
VALIDATE = """
import sys
from probe.targets import TargetFileError, check_targets
try:
    print(check_targets(sys.argv[1:]))
except TargetFileError as exc:
    print(exc)
"""
RUN = """
import asyncio, itertools, sys
sys.path.insert(0, "tests")
import factories as F
from probe import runner
from probe.targets import iter_targets

async def measure(target, plan, state=None):  # no network: a record from the factories
    await asyncio.sleep(0)
    return F.measurement(tgt=target)

runner.measure_target = measure
count = 0
def sink(m):
    global count
    count += 1
targets = itertools.islice(iter_targets(sys.argv[2:]), int(sys.argv[1]))
asyncio.run(runner.run_targets(targets, runner.RunPlan(concurrency=8), sink, collect=False))
print(count)
"""


def peak(code: str, *args: str, timeout: float = 240) -> tuple[str, float, float]:
    """(what the child printed, its peak RSS in MB, wall seconds)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PARENT, code, *args], capture_output=True,
                          text=True, timeout=timeout, check=True)
    *out, rss = done.stdout.strip().splitlines()
    return "\n".join(out), int(rss) / 1024, time.monotonic() - start


def write_csv(path: Path, rows: int) -> Path:
    with open(path, "w") as f:
        f.write(CSV_HEADER)
        for start in range(0, rows, 10_000):  # in chunks: the test itself stays small too
            f.write("".join(f"http://s{i}.example.org/,NEWS,,,,\n"
                            for i in range(start, min(rows, start + 10_000))))
    return path


def write_yaml(path: Path, targets: int, last: str) -> Path:
    with open(path, "w") as f:
        f.write("category: NEWS\ntargets:\n")
        for start in range(0, targets, 10_000):
            f.write("".join(f"  - domain: site{i}.example.org\n"
                            f"    url: https://site{i}.example.org/some/page\n"
                            for i in range(start, min(targets, start + 10_000))))
        f.write(last)
    return path


@pytest.fixture(scope="module")
def small_list(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    path = write_csv(tmp_path_factory.mktemp("small") / "small.csv", 1_000)
    out, rss, _ = peak(VALIDATE, str(path))
    assert out == "1000"
    return path, rss


@pytest.mark.slow
def test_a_million_row_csv_validates_in_the_memory_of_a_thousand(
        tmp_path: Path, hostile, small_list: tuple[Path, float]) -> None:
    path = write_csv(tmp_path / "big.csv", 1_000_000)
    with hostile.case("validate: 1 M-row CSV", timeout=240):
        out, rss, wall = peak(VALIDATE, str(path))
    assert out == "1000000"
    print(f"1 M rows ({path.stat().st_size >> 20} MB): {rss:.0f} MB peak in {wall:.0f} s;"
          f" 1 k rows: {small_list[1]:.0f} MB")
    assert rss < small_list[1] + SLACK_MB


@pytest.mark.slow
def test_a_50_mb_yaml_with_a_bad_last_line_is_refused_without_loading_it(
        tmp_path: Path, hostile, small_list: tuple[Path, float]) -> None:
    targets = 650_000  # ~ 50 MB
    path = write_yaml(tmp_path / "big.yaml", targets, "  - domain: 'not a domain'\n")
    last = 2 + 2 * targets + 1
    with hostile.case("validate: 50 MB YAML, error on the last line", timeout=240):
        out, rss, wall = peak(VALIDATE, str(path))
    assert path.stat().st_size > 50e6
    assert out == f"{path}:{last}: invalid domain 'not a domain'"
    print(f"50 MB YAML: refused in {wall:.0f} s at {rss:.0f} MB peak;"
          f" 1 k rows: {small_list[1]:.0f} MB")
    assert rss < small_list[1] + SLACK_MB


@pytest.mark.slow
def test_running_a_long_list_keeps_the_memory_of_a_short_one(
        tmp_path: Path, hostile, small_list: tuple[Path, float]) -> None:
    path = write_csv(tmp_path / "run.csv", 100_000)
    out_small, rss_small, _ = peak(RUN, "1000", str(small_list[0]))
    with hostile.case("run: 100 k targets through run_targets", timeout=240):
        out, rss, wall = peak(RUN, "100000", str(path))
    assert (out_small, out) == ("1000", "100000")
    print(f"run of 100 k targets: {rss:.0f} MB peak in {wall:.0f} s; 1 k: {rss_small:.0f} MB")
    assert rss < rss_small + SLACK_MB


async def test_the_runner_pulls_targets_as_slots_free_up(monkeypatch: pytest.MonkeyPatch,
                                                         hostile) -> None:
    pulled = finished = most_ahead = 0

    def targets():
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield F.target(f"t{i}.example")

    async def measure(target, plan, state=None):
        await asyncio.sleep(0.001)
        return F.measurement(tgt=target)

    def sink(m) -> None:
        nonlocal finished, most_ahead
        finished += 1
        most_ahead = max(most_ahead, pulled - finished)

    monkeypatch.setattr(runner, "measure_target", measure)
    with hostile.case("run: targets pulled lazily", timeout=10):
        kept = await asyncio.wait_for(run_targets(targets(), RunPlan(concurrency=5), sink,
                                                  collect=False), 10)
    assert kept == [] and finished == 200
    # never more targets taken and not finished than the in-flight bound (a multiple of the
    # concurrency: targets whose DNS queries only linger hold no slot)
    assert most_ahead <= 5 * runner._IN_FLIGHT_PER_SLOT


async def test_a_sink_that_fails_stops_the_run_and_cancels_what_is_in_flight(
        monkeypatch: pytest.MonkeyPatch, hostile) -> None:
    started: list[str] = []

    async def measure(target, plan, state=None):
        started.append(target.domain)
        await asyncio.sleep(0 if target.domain == "t0.example" else 30)
        return F.measurement(tgt=target)

    def sink(m) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "measure_target", measure)
    targets = (F.target(f"t{i}.example") for i in range(100))
    with hostile.case("run: the sink fails", timeout=10), pytest.raises(OSError):
        await asyncio.wait_for(run_targets(targets, RunPlan(concurrency=4), sink), 10)
    assert len(started) == 4 * runner._IN_FLIGHT_PER_SLOT  # the rest was never taken


def test_results_come_back_in_input_order_when_collected(monkeypatch: pytest.MonkeyPatch,
                                                         hostile) -> None:
    async def measure(target, plan, state=None):
        await asyncio.sleep(0.02 if target.domain == "t0.example" else 0)
        return F.measurement(tgt=target)

    monkeypatch.setattr(runner, "measure_target", measure)
    targets = [F.target(f"t{i}.example") for i in range(10)]
    with hostile.case("run: collected in input order", timeout=10):
        results = asyncio.run(run_targets(iter(targets), RunPlan(concurrency=3)))
    assert [m.target for m in results] == targets


async def test_a_lingering_dns_query_holds_no_slot(monkeypatch: pytest.MonkeyPatch,
                                                  hostile) -> None:
    """Connections open count against the concurrency; a query that only waits for late
    (injected) duplicates does not, so the 0.5 s linger does not cap the run's rate."""
    active = most_active = lingering = most_lingering = 0

    async def linger() -> object:
        nonlocal lingering, most_lingering
        lingering += 1
        most_lingering = max(most_lingering, lingering)
        await asyncio.sleep(0.2)
        lingering -= 1
        return F.dns()

    async def connections(target, plan, settings, state) -> runner._Active:
        nonlocal active, most_active
        active += 1
        most_active = max(most_active, active)
        query = asyncio.create_task(linger())
        await asyncio.sleep(0.01)
        active -= 1
        return runner._Active((query,), None, [(F.tcp(), (F.tls(),), F.http())], F.http(),
                              F.clean_control())

    monkeypatch.setattr(runner, "_measure_active", connections)
    targets = (F.target(f"t{i}.example") for i in range(24))
    with hostile.case("run: lingering queries", timeout=10):
        done = await asyncio.wait_for(run_targets(targets, RunPlan(concurrency=2,
                                                                   throughput=False)), 10)
    assert len(done) == 24 and all(m.verdict.verdict == "accessible" for m in done)
    assert most_active <= 2 < most_lingering <= 2 * runner._IN_FLIGHT_PER_SLOT
