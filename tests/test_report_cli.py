"""`probe report` on the command line: each format, --format from -o's suffix, bad input
refused with exit status 2 (the stored lab records of tests/data/report, as test_report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report import _store

from probe.cli.main import main


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return _store(tmp_path)


def test_cli_writes_each_format(out: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for form in ("html", "json", "md"):
        target = tmp_path / f"r.{form}"
        done = runner.invoke(main, ["report", "--out", str(out), "--since", "2026-11-24",
                                    "-o", str(target), "--format", form])
        assert done.exit_code == 0, done.output
        assert target.stat().st_size > 1000
    assert json.loads((tmp_path / "r.json").read_text())["measurements"] == 18
    done = runner.invoke(main, ["report", "--out", str(out), "-o", str(tmp_path / "x.md")])
    assert done.exit_code == 0 and (tmp_path / "x.md").read_text().startswith("# ")
    done = runner.invoke(main, ["report", "--out", str(out), "--format", "md"])
    assert done.exit_code == 0 and "pbs.twimg.com" not in done.output  # the latest run only
    assert "| navalny.com | **blocked** |" in done.output


@pytest.mark.parametrize("args, message", [
    (["--report-id", "nope"], "no run nope"),
    (["--since", "yesterday"], "expected a date"),
    (["--since", "2026-11-24", "--report-id", "x"], "exclude each other"),
])
def test_cli_refuses_bad_input_with_status_2(out: Path, args: list[str], message: str) -> None:
    done = CliRunner().invoke(main, ["report", "--out", str(out), *args])
    assert done.exit_code == 2 and message in done.output


def test_cli_on_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    done = CliRunner().invoke(main, ["report", "--out", str(missing)])
    assert done.exit_code == 2 and "no results folder" in done.output
    assert not missing.exists()
