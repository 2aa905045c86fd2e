"""Up and down: fast, bounded, and nothing left behind, even after a crash."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from probe.lab import scenarios
from probe.lab.lifecycle import Lab, LabError

pytestmark = pytest.mark.lab
PREFIX = "plabl"


def _root_view() -> dict[str, str]:
    """What the host's own namespace shows: links, iptables rules, netns list."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    return {"links": out("ip", "-o", "link", "show").count("to-c"),
            "rules": out("iptables-save").replace("\n", "|"),
            "nat": out("iptables", "-t", "nat", "-S")}


def _lab_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ours = b"probe.lab.servers" in cmdline or b"probe.lab.injector" in cmdline
            if ours and f"/{PREFIX}/".encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def _gone(lab: Lab) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{PREFIX}-" not in listed
    assert not any(Path("/etc/netns", ns).exists() for ns in lab.names.all)
    end = time.monotonic() + 5
    while _lab_processes() and time.monotonic() < end:
        time.sleep(0.05)
    assert _lab_processes() == []
    assert not lab.state_file.exists()


def test_up_then_down_leaves_nothing(lab_capable, tmp_path: Path) -> None:
    before = _root_view()
    lab = Lab(PREFIX, tmp_path)
    try:
        start = time.monotonic()
        state = lab.up(scenarios.load("dns_injection"), helper=False)  # every process kind
        assert time.monotonic() - start < 10
        assert set(state["pids"]) == {"internet", "censor", "injector"}
        assert len(_lab_processes()) == 3
        assert _root_view() == before  # the host's namespace is never touched
    finally:
        start = time.monotonic()
        lab.down()
    assert time.monotonic() - start < 10
    _gone(lab)
    assert _root_view() == before


def test_a_crashed_run_is_cleaned_at_the_next_start(lab_capable, tmp_path: Path) -> None:
    crashed = Lab(PREFIX, tmp_path)
    try:
        crashed.up(scenarios.load("tls_rst"), helper=False)
        crashed.state_file.unlink()  # lost state: only the prefix and the namespaces remain
        survivor = crashed.state()["pids"] if crashed.state() else None
        assert survivor is None and len(_lab_processes()) == 2
        fresh = Lab(PREFIX, tmp_path)
        fresh.up(scenarios.load("clean"), helper=False)
        assert fresh.state()["scenario"] == "clean"
        assert len(_lab_processes()) == 2  # the crashed run's servers were killed
    finally:
        Lab(PREFIX, tmp_path).down()
    _gone(crashed)


def test_a_server_that_dies_fails_up_and_is_torn_down(lab_capable, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab(PREFIX, tmp_path)
    real_spawn = Lab._spawn

    def broken(self: Lab, state: dict, name: str, ns: str, args: list[str]) -> None:
        real_spawn(self, state, name, ns, ["-c", "import sys; sys.exit('broken on purpose')"]
                   if name == "censor" else args)

    monkeypatch.setattr(Lab, "_spawn", broken)
    with pytest.raises(LabError, match="broken on purpose"):
        lab.up(scenarios.load("clean"), helper=False)
    _gone(lab)


def test_down_without_up_is_harmless(lab_capable, tmp_path: Path) -> None:
    Lab(PREFIX, tmp_path).down()
    _gone(Lab(PREFIX, tmp_path))


def test_processes_ignoring_sigterm_are_killed(lab_capable, tmp_path: Path) -> None:
    lab = Lab(PREFIX, tmp_path)
    try:
        lab.up(scenarios.load("clean"), helper=False)
        stubborn = subprocess.Popen(["ip", "netns", "exec", lab.names.client, "python3", "-c",
                                     "import signal,time; signal.signal(signal.SIGTERM, "
                                     "signal.SIG_IGN); print('ready', flush=True); "
                                     "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    finally:
        lab.down()
    assert stubborn.wait(timeout=5) == -signal.SIGKILL
    _gone(lab)
