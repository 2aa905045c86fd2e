"""The probe does not follow a redirect from a non-loopback target into its own loopback: a
hostile target would otherwise be judged accessible through a service of the volunteer's own
machine. Loopback origins (the tests, a forged DNS answer) keep loopback allowed.

The end-to-end case needs an origin on an address that is not loopback yet sends nothing
anywhere: a fresh, anonymous network namespace (`unshare -n`, root) with 10.99.0.1 on its own
`lo`. It is a lab test (run under the lab lock); the guard itself is also tested without one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from probe.measure import http
from probe.measure.http_connect import ConnectGuard

OUTSIDE = "10.99.0.1"  # exists only inside the test's own namespace
SECRET = "SECRET-c41d"


def _info(address: str) -> tuple:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return (family, socket.SOCK_STREAM, 6, "", (address, 80))


GUARD_CASES = [  # (first address, then, allowed)
    ("203.0.113.7", "127.0.0.1", False),
    ("203.0.113.7", "::1", False),
    ("203.0.113.7", "::ffff:127.0.0.1", False),
    ("203.0.113.7", "0.0.0.0", False),
    ("203.0.113.7", "127.8.9.10", False),
    ("203.0.113.7", "10.77.0.2", True),  # the lab's private addresses stay allowed
    ("203.0.113.7", "198.51.100.1", True),
    ("127.0.0.1", "127.0.0.1", True),  # a loopback origin: tests, and lab set-ups
    ("::1", "127.0.0.1", True),
]


@pytest.mark.parametrize(("first", "then", "allowed"), GUARD_CASES)
def test_connect_guard(first: str, then: str, allowed: bool, hostile) -> None:
    """Sockets are made, never connected: nothing is sent."""
    guard = ConnectGuard(None)
    with hostile.case(f"probe redirect guard: {first} -> {then}"):
        guard.socket(_info(first)).close()
        if allowed:
            guard.socket(_info(then)).close()
        else:
            with pytest.raises(OSError, match="loopback"):
                guard.socket(_info(then))


# --- end to end, inside a namespace of its own --------------------------------------------------

LOCATIONS = [  # {v4} and {v6}: ports of the "secret" servers on the namespace's loopback
    "http://127.0.0.1:{v4}/secret",
    "http://[::1]:{v6}/secret",
    "http://[::ffff:127.0.0.1]:{v4}/secret",
    "http://0.0.0.0:{v4}/secret",
    "http://localhost:{v4}/secret",
]


async def _inside() -> dict:
    """Runs in the namespace: origin on 10.99.0.1 (and on 127.0.0.1 for the control case)."""
    from aiohttp import web

    from probe.model import HttpRequest, Settings

    hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text=f"<title>{SECRET}</title>", content_type="text/html")

    async def go(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    runners, ports = [], {}
    for name, host, route in [("v4", "127.0.0.1", secret), ("v6", "::1", secret),
                              ("origin", OUTSIDE, go), ("local", "127.0.0.1", go)]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", route)
        runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        runners.append(runner)
        ports[name] = runner.addresses[0][1]
    settings, out = Settings(timeout=2.0), {"cases": {}}
    try:
        for location in LOCATIONS:
            to = quote(location.format(v4=ports["v4"], v6=ports["v6"]), safe="")
            url = f"http://{OUTSIDE}:{ports['origin']}/go?to={to}"
            result = await http.measure(HttpRequest(url), settings)
            out["cases"][location] = [result.status, result.title, result.failure, result.cause]
        hits_before_control = len(hits)
        to = quote(f"http://127.0.0.1:{ports['v4']}/secret", safe="")
        local = await http.measure(
            HttpRequest(f"http://127.0.0.1:{ports['local']}/go?to={to}"), settings)
        out["control"] = [local.status, local.title, local.failure]
        out["hits"] = hits_before_control
    finally:
        for runner in runners:
            await runner.cleanup()
    return out


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare for a namespace of its own")
def test_redirect_from_outside_into_loopback_is_not_followed(hostile) -> None:
    script = (f"ip link set lo up && ip addr add {OUTSIDE}/32 dev lo && "
              f"exec {sys.executable} {Path(__file__).resolve()} inside")
    with hostile.case("probe redirect into loopback (namespace)", timeout=30.0) as case:
        proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                              text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
        case.traceback = "Traceback" in proc.stderr
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for location, (status, title, failure, cause) in out["cases"].items():
        print(f"{location}: status {status}, failure {failure} ({cause})")
        assert status is None and title != SECRET and failure is not None, location
    assert out["hits"] == 0
    # the control: a loopback origin may redirect into loopback (so the test can fail)
    assert out["control"] == [200, SECRET, None]


if __name__ == "__main__" and sys.argv[1:] == ["inside"]:
    print(json.dumps(asyncio.run(_inside())))
