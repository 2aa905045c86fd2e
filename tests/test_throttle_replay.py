"""bench/throttle.py --replay: recorded runs judged again by the code as it is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_throttling_rates import POLICED_140K, SHAPED_2M_LATE_STALL

_SPEC = importlib.util.spec_from_file_location(
    "bench_throttle", Path(__file__).resolve().parents[1] / "bench" / "throttle.py")
throttle = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(throttle)  # a script, not a package: loaded by its path

FAST = [[[0.0, 0], [0.01, 131072], [0.02, 262144]], 1e8]  # a control flow at line rate


def _recorded(target: tuple, state: str, rate: float) -> dict:
    """A run as --json-out keeps it: a fast growing pair, then two judged pairs."""
    growing = [[[0.0, 0], [0.02, 262144]], 1e8]
    judged = [[list(map(list, target)), rate]] * 2
    return {"state": state, "bytes": 0, "pairs": 3, "seconds": 9.0, "rate": rate,
            "control": 1e8, "below": None, "outlasted": True,
            "targets": [growing, *judged], "controls": [FAST] * 3}


def test_replay_judges_the_recorded_flows_again(tmp_path: Path, capsys) -> None:
    # the run recorded at 0.56x of a 2 Mbit/s shaper (a stall at the end read as a knee)
    shaped = _recorded(SHAPED_2M_LATE_STALL, "throttled", 1.12e6)
    again = throttle.replay(shaped)
    assert again["state"] == "throttled" and again["recorded"] == "throttled"
    assert again["rate"] == pytest.approx(2e6, rel=0.25)
    assert throttle.replay(_recorded(POLICED_140K, "throttled", 1.2e5))["rate"] == pytest.approx(
        140e3, rel=0.25)
    # the table of a file: the replay's rates, and what changed state
    chunk = tmp_path / "chunk.jsonl"
    chunk.write_text(json.dumps({"scenario": "shape_2M_100mbit", "runs": [shaped]}) + "\n"
                     + json.dumps({"scenario": "clean_100mbit", "runs": [shaped]}) + "\n")
    runs = {name: [throttle.replay(r) for r in rs]
            for name, rs in throttle.combine([str(chunk)]).items()}
    by_name = {s["name"]: s for s in throttle.SCENARIOS}
    line = throttle.report(by_name["shape_2M_100mbit"], runs["shape_2M_100mbit"])
    assert "rate within 25%: 1/1" in line and "state changed" not in line
    assert throttle.report(by_name["clean_100mbit"], [{**runs["clean_100mbit"][0],
                                                       "state": "clean"}]).count("changed") == 1
