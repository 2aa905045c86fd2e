"""The hostile suite: hostile servers, bad input, broken storage; every case is recorded, and the
figures are printed at the end of the run (cases tried, tracebacks, worst wall time against the
timeout, peak RSS, records lost).

A test records its case with the `hostile` fixture:

    def test_x(hostile):
        with hostile.case("title tag flood", timeout=2.0) as case:
            result = run_something()
            case.lost = expected_records - stored_records   # when storage is involved
            case.traceback = "Traceback" in stderr            # when a subprocess is involved

Wall time is measured around the block; an exception escaping the block counts as a traceback
(and fails the test as usual).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest


@dataclass
class Case:
    name: str
    timeout: float | None = None
    wall: float = 0.0
    traceback: bool = False
    lost: int = 0


@dataclass
class Figures:
    cases: list[Case] = field(default_factory=list)

    @contextmanager
    def case(self, name: str, timeout: float | None = None) -> Iterator[Case]:
        case = Case(name, timeout)
        self.cases.append(case)
        start = time.monotonic()
        try:
            yield case
        except BaseException:
            case.traceback = True
            raise
        finally:
            case.wall = time.monotonic() - start

    def summary(self) -> list[str]:
        if not self.cases:
            return []
        timed = [c for c in self.cases if c.timeout]
        worst = max(timed, key=lambda c: c.wall / c.timeout, default=None)  # type: ignore[operator]
        rss_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        lines = [
            f"cases tried: {len(self.cases)}",
            f"tracebacks: {sum(c.traceback for c in self.cases)} (goal 0)",
            f"records lost: {sum(c.lost for c in self.cases)} (goal 0)",
            f"peak RSS: {rss_mb:.0f} MB (this process or a child)",
        ]
        if worst is not None:
            lines.append(f"worst wall time: {worst.wall:.2f} s against a timeout of "
                         f"{worst.timeout:.2f} s ({worst.name})")
        return lines


FIGURES = Figures()


@pytest.fixture
def hostile() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = FIGURES.summary()
    if lines:
        terminalreporter.section("hostile suite")
        for line in lines:
            terminalreporter.write_line(line)
