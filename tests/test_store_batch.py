"""Group commit in the results store: records held up to a batch, then one write + fsync + one
index transaction; a crash loses at most the batch held, never part of a record."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import factories as F

from probe.results.store import Store, read_records
from probe.verdict import judge

TESTS = Path(__file__).parent


def judged(n: int):
    scenarios = list(F.scenarios().values())
    return [dataclasses.replace(m, verdict=judge(m)) for m, _, _ in scenarios[:n]]


def on_disk(folder: Path) -> tuple[int, int]:
    """(records in the JSON lines, rows in the index) as another reader sees them now."""
    lines = sum(1 for p in folder.glob("*.jsonl") for _ in read_records(p))
    with sqlite3.connect(folder / "index.sqlite") as db:
        rows = db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    return lines, rows


def test_records_wait_for_their_batch_and_close_writes_the_rest(tmp_path):
    ms = judged(5)
    with Store(tmp_path, "batch", batch=3) as store:
        store.append(ms[0], "r1")
        store.append(ms[1], "r1")
        assert on_disk(tmp_path) == (0, 0)
        store.append(ms[2], "r1")
        assert on_disk(tmp_path) == (3, 3)  # one write, one transaction
        store.append(ms[3], "r1")
        store.append(ms[4], "r1")
        assert on_disk(tmp_path) == (3, 3)
    assert on_disk(tmp_path) == (5, 5)


def test_queries_see_the_records_held(tmp_path):
    ms = judged(2)
    with Store(tmp_path, "batch", batch=10) as store:
        for m in ms:
            store.append(m, "r1")
        assert store.runs()[0]["targets"] == 2
        assert on_disk(tmp_path) == (2, 2)


def _run(code: str, folder: Path) -> subprocess.CompletedProcess:
    prelude = (f"import dataclasses, os, resource, signal, sys\nsys.path.insert(0, {str(TESTS)!r})\n"
               "import factories as F\nfrom probe.results.store import Store, StoreError\n"
               "from probe.verdict import judge\n"
               "ms = [dataclasses.replace(m, verdict=judge(m)) for m, _, _ in "
               "list(F.scenarios().values())[:5]]\n")
    return subprocess.run([sys.executable, "-c", prelude + code, str(folder)], timeout=60,
                          cwd=TESTS.parent, capture_output=True, text=True)


def test_a_kill_loses_at_most_the_batch_held(tmp_path):
    done = _run("store = Store(sys.argv[1], 'kill', batch=2)\n"
                "for m in ms: store.append(m, 'r1')\n"
                "os.kill(os.getpid(), signal.SIGKILL)\n", tmp_path)
    assert done.returncode == -9, done.stderr
    (path,) = tmp_path.glob("*.jsonl")
    assert path.read_bytes().count(b"\n") == 4  # two whole batches, the fifth record lost
    assert on_disk(tmp_path) == (4, 4)


def test_a_failed_batch_write_leaves_no_part_of_it(tmp_path):
    """A file size limit (like a full disk) cuts the second batch's write short: the file is
    cut back to the first batch, StoreError names it, and the store still works after."""
    done = _run("store = Store(sys.argv[1], 'full', batch=2)\n"
                "store.append(ms[0], 'r1'); store.append(ms[1], 'r1')\n"
                "(path,) = __import__('pathlib').Path(sys.argv[1]).glob('*.jsonl')\n"
                "size = path.stat().st_size\n"
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))\n"
                "store.append(ms[2], 'r1')\n"
                "try:\n    store.append(ms[3], 'r1')\nexcept StoreError as exc:\n"
                "    print('StoreError', exc)\n"
                "assert path.stat().st_size == size, path.stat().st_size\n", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("StoreError cannot write"), done.stdout
    assert on_disk(tmp_path) == (2, 2)


def test_on_written_hears_of_a_record_only_once_it_is_on_disk(tmp_path):
    ms, heard = judged(3), []
    with Store(tmp_path, "batch", batch=2) as store:
        store.on_written = lambda record: heard.append((record["input"], on_disk(tmp_path)))
        store.append(ms[0], "r1")
        assert heard == []
        store.append(ms[1], "r1")
        store.append(ms[2], "r1")
    assert [seen for _, seen in heard] == [(2, 2), (2, 2), (3, 3)]
    assert [url for url, _ in heard] == [m.target.url for m in ms]
