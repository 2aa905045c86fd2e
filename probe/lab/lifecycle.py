"""Building and tearing down one scenario: `Lab().up(scenario)`, `Lab().down()`.

Everything the lab creates is findable afterwards, so a crashed run is cleaned at the next start:
namespaces by their prefix, processes by the PIDs in `state.json` and by `ip netns pids`, and
/etc/netns/<ns>/ (the client's resolv.conf). Every wait has a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from probe.lab import censor, topology
from probe.lab import topology as t
from probe.lab.ca import LabCA
from probe.lab.scenarios import Scenario, targets_yaml

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = Path(os.environ.get("PROBE_LAB_STATE", "/run/probe-lab"))


class LabError(RuntimeError):
    pass


class Lab:
    def __init__(self, prefix: str = "plab", state_root: Path = STATE_ROOT) -> None:
        self.names = topology.Names(prefix)
        self.dir = state_root / prefix
        self.state_file = self.dir / "state.json"

    # --- public API ----------------------------------------------------------------------

    def up(self, scenario: Scenario, helper: bool = True, deadline: float = 30.0) -> dict:
        """Builds the scenario (after cleaning any leftovers) and returns its state.

        `helper`: start `probe serve` in the internet namespace.
        On any failure everything built so far is torn down before the error propagates.
        """
        self.down()
        self.names = topology.Names(self.names.prefix, scenario.censor_hop)
        self.dir.mkdir(parents=True)
        state: dict[str, Any] = {"scenario": scenario.name, "prefix": self.names.prefix,
                                 "namespaces": list(self.names.all), "pids": {}}
        try:
            self._build(scenario, state, helper, time.monotonic() + deadline)
        except BaseException:
            self.down()
            raise
        return state

    def down(self) -> None:
        """Kills the lab's processes and deletes its namespaces; safe to call at any time."""
        # Recorded PIDs only if they still run lab code (a PID may have been reused since).
        pids = [p for p in self.state().get("pids", {}).values() if _ours(p)]
        for ns in topology.list_namespaces(self.names.prefix):
            out = topology.run(["ip", "netns", "pids", ns], check=False)
            pids += [int(p) for p in out.split()]
        _terminate(pids, grace=3.0)
        for process in getattr(self, "_processes", {}).values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)  # reap; killed above
        self._processes = {}
        topology.destroy(self.names.prefix)
        for ns in self.names.all:
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        for folder in (Path("/etc/netns"), self.dir.parent):  # only when left empty
            with contextlib.suppress(OSError):
                folder.rmdir()

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def exec(self, cmd: list[str], timeout: float = 120.0,
             ns: str | None = None) -> subprocess.CompletedProcess[str]:
        """Runs a command in the client namespace (or `ns`), Python from this environment."""
        return subprocess.run(["ip", "netns", "exec", ns or self.names.client, *cmd],
                              capture_output=True, text=True, timeout=timeout, env=lab_env(),
                              cwd=REPO)

    # --- building ------------------------------------------------------------------------

    def _build(self, scenario: Scenario, state: dict[str, Any], helper: bool,
               deadline: float) -> None:
        plan = censor.plan(list(scenario.rules))
        pki = LabCA(self.dir / "pki")
        certs = {name: [str(p) for p in pki.issue(name, address)]
                 for name, address in t.ZONE.items()}
        state.update(ca_file=str(pki.ca_file), targets_file=str(self.dir / "targets.yaml"),
                     control_resolver=f"tls://{t.TRUSTED_RESOLVER}:853",
                     control_resolvers=[f"udp://{t.TRUSTED_RESOLVER}:53",
                                        f"tls://{t.TRUSTED_RESOLVER}:853",
                                        f"https://{t.TRUSTED_RESOLVER}/dns-query"],
                     system_resolver=plan.client_resolver, helper_url=None)
        self._save(state)
        topology.build(self.names)
        for command in plan.commands:
            topology.in_ns(self.names.censor, *command)
        resolv = Path("/etc/netns") / self.names.client
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text(f"nameserver {plan.client_resolver}\n")
        Path(state["targets_file"]).write_text(targets_yaml(scenario))
        self._start_servers(plan, certs, state)
        if plan.injector is not None:
            self._spawn(state, "injector", self.names.censor, ["-m", "probe.lab.injector",
                        self._config("injector", plan.injector)])
        self._wait_ready(state, deadline)
        if helper:
            self._start_helper(state, certs[t.HELPER_NAME], pki.ca_file, deadline)
        self._save(state)

    def _start_servers(self, plan: censor.Plan, certs: dict[str, list[str]],
                       state: dict[str, Any], origins: dict[str, str] = t.ORIGINS,
                       zone: dict[str, str] = t.ZONE, big_bytes: int = 4 << 20) -> None:
        """The internet's servers and the censor's; `origins`, `zone`, `big_bytes` let a
        benchmark serve names of its own (bench/scale.py)."""
        internet = {**plan.internet, "certs": certs, "origins": origins, "zone": zone,
                    "auth": t.AUTH_DNS, "trusted": t.TRUSTED_RESOLVER,
                    "trusted_name": t.TRUSTED_RESOLVER_NAME, "public": t.PUBLIC_RESOLVER,
                    "big_bytes": big_bytes}
        self._spawn(state, "internet", self.names.net,
                    ["-m", "probe.lab.servers", "internet", self._config("internet", internet)])
        censor_cfg = {**plan.isp, "certs": {t.BLOCKPAGE_NAME: certs[t.BLOCKPAGE_NAME]},
                      "blockpage_name": t.BLOCKPAGE_NAME, "blockpage_ip": t.BLOCKPAGE_IP,
                      "proxy_port": censor.PROXY_PORT, "isp": t.ISP_RESOLVER,
                      "upstream": t.AUTH_DNS}
        self._spawn(state, "censor", self.names.censor,
                    ["-m", "probe.lab.servers", "censor", self._config("censor", censor_cfg)])

    def _start_helper(self, state: dict[str, Any], cert: list[str], ca_file: Path,
                      deadline: float) -> None:
        self._spawn(state, "helper", self.names.net, [
            "-m", "probe", "serve", "--host", t.HELPER_IP, "--port", "443", "--cert", cert[0],
            "--key", cert[1], "--ca-file", str(ca_file),
            "--resolver", f"udp://{t.TRUSTED_RESOLVER}:53", "--allow-private-addresses"])
        script = f"exec 3<>/dev/tcp/{t.HELPER_IP}/443"
        while time.monotonic() < deadline:
            if self.exec(["bash", "-c", script], timeout=5, ns=self.names.net).returncode == 0:
                state["helper_url"] = f"https://{t.HELPER_IP}/"
                return
            if self._exited("helper", state):
                break
            time.sleep(0.1)
        raise LabError(f"the helper did not start; see {self.dir / 'logs/helper.log'}")

    def _config(self, name: str, cfg: dict[str, Any]) -> str:
        path = self.dir / f"{name}.json"
        path.write_text(json.dumps({**cfg, "ready": str(self.dir / f"{name}.ready")}, indent=1))
        return str(path)

    def _spawn(self, state: dict[str, Any], name: str, ns: str, args: list[str]) -> None:
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, *args], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, env=lab_env(),
                start_new_session=True)
        self._processes = {**getattr(self, "_processes", {}), name: process}
        state["pids"][name] = process.pid
        self._save(state)  # recorded at once: a crash from here on still leaves a trace

    def _exited(self, name: str, state: dict[str, Any]) -> bool:
        process = getattr(self, "_processes", {}).get(name)
        return process is not None and process.poll() is not None

    def _wait_ready(self, state: dict[str, Any], deadline: float) -> None:
        waiting = {n for n in state["pids"] if n != "helper"}
        while waiting:
            for name in list(waiting):
                if (self.dir / f"{name}.ready").exists():
                    waiting.discard(name)
                elif self._exited(name, state):
                    log = (self.dir / "logs" / f"{name}.log").read_text()[-2000:]
                    raise LabError(f"lab process {name} exited:\n{log}")
            if waiting and time.monotonic() > deadline:
                raise LabError(f"lab processes not ready in time: {sorted(waiting)}")
            time.sleep(0.05)

    def _save(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state, indent=1))


def lab_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def _terminate(pids: list[int], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
    alive = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(alive):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                alive.discard(pid)
        end = time.monotonic() + grace
        while alive and time.monotonic() < end:
            alive = {pid for pid in alive if _alive(pid)}
            time.sleep(0.05)


def _ours(pid: int) -> bool:
    try:
        return b"probe" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Running, not a zombie (zombies of our own children are reaped by down())."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False
