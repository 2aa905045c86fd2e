"""Bad input through the real `probe` command: every case is one line on stderr naming the option
or FILE:LINE, a documented exit status, no traceback, nothing measured; and one target whose
measurement hits a bug does not lose the run.

Measuring is replaced (`probe.runner.measure_target`) by a function that fails the test, or by
records built from factories: these cases are about input and the CLI, and no test may send
traffic anywhere but loopback (the shipped lists name public sites).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import factories as F
import pytest
from click.testing import CliRunner, Result

from probe import runner
from probe.cli import main
from probe.verdict import judge

GOOD = "targets:\n  - domain: example.test\n    url: https://example.test/\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))  # exceptions caught: a traceback is a finding


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    async def must_not_measure(target, plan, state=None):
        raise AssertionError(f"{target.domain} measured despite bad input")

    monkeypatch.setattr(runner, "measure_target", must_not_measure)


def _file(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _csv(rows: str) -> str:
    return "url,category_code,category_description,date_added,source,notes\n" + rows


def _corrupt_index(tmp_path: Path) -> str:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.sqlite").write_bytes(b"this is not a database" * 100)
    return str(out)


# (case, arguments after `run` given tmp_path, what stderr names)
TargetArgs = Callable[[Path], list[str]]
RUN_CASES: list[tuple[str, TargetArgs, str]] = [
    ("yaml url port 99999", lambda p: ["--targets", _file(p, "t.yaml", GOOD + (
        "  - domain: bad.test\n    url: https://bad.test:99999/\n"))], "t.yaml:5: "),
    ("csv url port 99999", lambda p: ["--strict", "--targets", _file(p, "t.csv", _csv(
        "https://a.test/,NEWS,,,,\nhttps://b.test:99999/,NEWS,,,,\n"))], "t.csv:3: "),
    ("csv url port 0", lambda p: ["--strict", "--targets", _file(p, "t.csv", _csv(
        "https://b.test:0/,NEWS,,,,\n"))], "t.csv:2: "),
    ("url with a space", lambda p: ["--targets", _file(p, "t.yaml", GOOD + (
        "  - {domain: c.test, url: 'https://c.test/a b'}\n"))], "t.yaml:4: "),
    ("throughput url port 70000", lambda p: ["--targets", _file(p, "t.yaml", GOOD + (
        "  - {domain: d.test, throughput_url: 'https://d.test:70000/x'}\n"))], "t.yaml:4: "),
    ("non-UTF-8 on line 3", lambda p: ["--targets", _file(p, "t.csv", _csv(
        "https://a.test/,NEWS,,,,\n").encode() + b"https://b.test/,NEWS,\xff\xfe,,,\n")],
     "t.csv:3: not UTF-8"),
    ("non-UTF-8 yaml on line 4", lambda p: ["--targets", _file(
        p, "t.yaml", GOOD.encode() + b"  - domain: caf\xe9.test\n")], "t.yaml:4: not UTF-8"),
    ("yaml alias bomb", lambda p: ["--targets", _file(p, "t.yaml", (
        "a: &a [x, x]\ntargets: *a\n"))], "t.yaml:1: "),
    ("yaml alias in the targets", lambda p: ["--targets", _file(p, "t.yaml", (
        "targets:\n  - &x a.test\n  - *x\n"))], "t.yaml:3: YAML aliases"),
    ("deeply nested yaml value", lambda p: ["--targets", _file(p, "t.yaml", (
        "targets:\n  - domain: " + "[" * 5000 + "]" * 5000 + "\n"))],
     # PyYAML >= 6.0.4's parser refuses the depth itself; older ones leave it to the field check
     "t.yaml:2: domain must|t.yaml:2: not valid YAML: exceeded maximum nesting depth"),
    ("two yaml documents", lambda p: ["--targets", _file(p, "t.yaml", GOOD + "---\n" + GOOD)],
     "t.yaml:4: more than one"),
    # a CSV row that cannot be measured is a warning; --strict makes it the error
    ("bad row after a good file", lambda p: ["--strict", "--targets", _file(p, "a.yaml", GOOD),
                                             "--targets",
                                             _file(p, "b.csv", _csv("ftp://x.test/,NEWS,,,,\n"))],
     "b.csv:2: "),
    ("csv of rows that cannot be measured", lambda p: ["--targets", _file(p, "b.csv", _csv(
        "ftp://x.test/,NEWS,,,,\n"))], "b.csv:1: no targets (1 row skipped)"),
    ("ca-file not PEM", lambda p: ["--targets", _file(p, "t.yaml", GOOD), "--ca-file",
                                   _file(p, "ca.pem", "not a certificate\n")], "--ca-file"),
    ("pushgateway not a URL", lambda p: ["--targets", _file(p, "t.yaml", GOOD), "--pushgateway",
                                         "not-a-url"], "--pushgateway"),
    ("helper without host", lambda p: ["--helper", "http://"], "--helper"),
    ("helper port 99999", lambda p: ["--helper", "https://h.test:99999/"], "--helper"),
    ("udp resolver port 0", lambda p: ["--control-resolver", "udp://127.0.0.1:0"],
     "--control-resolver"),
    ("probe-cc three letters", lambda p: ["--probe-cc", "RUS"], "--probe-cc"),
    ("probe-cc not ASCII", lambda p: ["--probe-cc", "РУ"], "--probe-cc"),
    ("probe-cc digits", lambda p: ["--probe-cc", "R1"], "--probe-cc"),
    ("corrupt results index", lambda p: ["--targets", _file(p, "t.yaml", GOOD), "--out",
                                         _corrupt_index(p)], "--out"),
    ("results folder is a file", lambda p: ["--targets", _file(p, "t.yaml", GOOD), "--out",
                                            _file(p, "afile", "x")], "--out"),
]


@pytest.mark.parametrize(("name", "args", "names"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, hostile, no_measuring, name: str,
                                          args: TargetArgs, names: str) -> None:
    with hostile.case(f"run: {name}") as case:
        result = invoke("run", *args(tmp_path), "--json")
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert not case.traceback, result.exc_info
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, result.stderr  # click adds a usage line
    assert any(one in errors[0] for one in names.split("|")), result.stderr  # "|": either
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_check_refuses_a_url_with_port_99999(tmp_path: Path, hostile, no_measuring) -> None:
    with hostile.case("check: url port 99999") as case:
        result = invoke("check", "a.test", "--url", "https://a.test:99999/", "--out",
                        str(tmp_path / "out"))
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 2 and "invalid port" in result.stderr, result.output


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_daemon_listen_address_in_use(tmp_path: Path, hostile, no_measuring, monkeypatch
                                      ) -> None:
    from probe.monitoring.daemon import Daemon

    async def no_runs(self, stop, first_delay=None) -> None:  # a bind that worked ends at once
        return None

    monkeypatch.setattr(Daemon, "loop", no_runs)
    with _busy_port() as busy, hostile.case("daemon: --listen in use") as case:
        port = busy.getsockname()[1]
        result = invoke("daemon", "--targets", _file(tmp_path, "t.yaml", GOOD), "--out",
                        str(tmp_path / "out"), "--listen", f"127.0.0.1:{port}")
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 2, result.output
    assert "--listen" in result.stderr and "in use" in result.stderr, result.stderr


def test_serve_port_in_use(hostile) -> None:
    with _busy_port() as busy, hostile.case("serve: --port in use", timeout=30) as case:
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "probe", "serve", "--insecure-http",
                               "--port", str(port)], capture_output=True, text=True, timeout=30)
        case.traceback = "Traceback" in done.stderr
    assert done.returncode == 2, done.stderr
    assert "--port" in done.stderr and "in use" in done.stderr, done.stderr
    assert not case.traceback


def test_serve_ca_file_not_pem(tmp_path: Path, hostile) -> None:
    with hostile.case("serve: --ca-file not PEM") as case:
        result = invoke("serve", "--insecure-http", "--ca-file",
                        _file(tmp_path, "ca.pem", "-----BEGIN CERTIFICATE-----\nxx\n"))
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 2 and "--ca-file" in result.stderr, result.output


# --- the second line of defence: a bug in one target's measurement ---------------------------

BUGGY = "b.test"


@pytest.fixture
def one_buggy_target(monkeypatch: pytest.MonkeyPatch) -> None:
    async def measure(target, plan, state=None):
        if target.domain == BUGGY:
            return {}["a programming error"]  # KeyError, as a real bug would raise
        m = F.measurement(tgt=target)
        return dataclasses.replace(m, verdict=judge(m))

    monkeypatch.setattr(runner, "measure_target", measure)


def test_one_buggy_target_does_not_lose_the_run(tmp_path: Path, hostile, one_buggy_target,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROBE_STRICT")  # the guard under test; strict everywhere else
    targets = _file(tmp_path, "t.yaml", "targets: [a.test, b.test, c.test, d.test]\n")
    out = tmp_path / "out"
    with hostile.case("run: a bug in one target") as case:
        result = invoke("run", "--targets", targets, "--out", str(out), "--json")
        stored = [json.loads(line) for f in out.glob("*.jsonl") for line in
                  f.read_text().splitlines()]
        case.lost = 4 - len(stored)
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 5, result.output
    assert sorted(s["input"] for s in stored) == [f"https://{d}.test/" for d in "abcd"]
    [bug] = [s for s in stored if s["input"] == f"https://{BUGGY}/"]
    keys = bug["test_keys"]
    assert (keys["verdict"], keys["failure"]) == ("inconclusive", "unknown_failure")
    assert "internal error: KeyError" in keys["reason"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 target(s) hit an internal error" in errors[0]
    assert BUGGY in errors[0]


def test_strict_mode_lets_the_bug_raise(tmp_path: Path, hostile, one_buggy_target) -> None:
    targets = _file(tmp_path, "t.yaml", "targets: [a.test, b.test]\n")
    with hostile.case("run: a bug under PROBE_STRICT=1"):
        result = invoke("run", "--targets", targets, "--out", str(tmp_path / "out"))
    assert isinstance(result.exception, KeyError)


def test_results_of_a_corrupt_index_is_one_line(tmp_path: Path, hostile) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with hostile.case("results: corrupt index") as case:
        result = invoke("results", "--out", str(out))
        case.traceback = result.exc_info is not None and result.exc_info[0] is not SystemExit
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: --out: ") and result.stderr.count("\n") == 1
