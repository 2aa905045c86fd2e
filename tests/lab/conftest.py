"""Lab fixtures: build a scenario in network namespaces, yield it, and always tear it down.

Tests use their own prefix ("plabt"), so a lab brought up by hand (`probe lab up`, "plab") is
left alone; both can exist at once since every address lives inside its own namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.lab import scenarios
from probe.lab.lifecycle import Lab

PREFIX = "plabt"


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (CAP_NET_ADMIN) to create network namespaces"
    probe_ns = f"{PREFIX}-cap"
    made = subprocess.run(["ip", "netns", "add", probe_ns], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe_ns], capture_output=True)
    return None


@pytest.fixture(scope="session")
def lab_capable() -> None:
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab_factory(lab_capable: None, tmp_path: Path) -> Iterator[Callable[[str | scenarios.Scenario], Lab]]:
    """`build("tls_rst")` -> a Lab with that scenario up; torn down whatever happens."""
    lab = Lab(prefix=PREFIX, state_root=tmp_path / "state")

    def build(name: str | scenarios.Scenario) -> Lab:
        lab.up(scenarios.load(name) if isinstance(name, str) else name, helper=False)
        return lab

    try:
        yield build
    finally:  # also on KeyboardInterrupt and failed assertions
        lab.down()


def _check(lab: Lab, *args: str, timeout: float = 30.0) -> dict[str, Any]:
    ca = lab.state()["ca_file"]
    done = lab.exec([sys.executable, "-m", "probe.lab.checks", *args, "--ca", ca],
                    timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def check() -> Callable[..., dict[str, Any]]:
    """`check(lab, "https", "navalny.com")`: probe.lab.checks run in the client namespace."""
    return _check
