"""Debian's chromium, headless, for pages the tests render: a screenshot or the DOM after the
page's scripts ran, every console message, and every URL the page asked for (from chromium's
net log). Nothing can leave the machine: name resolution is mapped to nothing and every
request, to an address literal too, goes through a "proxy" on a closed loopback port (chromium
itself still tries its Google update and time services: they fail there too, and are left out
of `requests`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
         "--disable-client-side-phishing-detection", "--disable-breakpad",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars")
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")
_URL = re.compile(r'"url":\s*"([^"]+)"')
_CHROMIUM_OWN = ("google.com", "googleapis.com", "gstatic.com", "gvt1.com")


@dataclass(frozen=True)
class Run:
    console: list[str]  # console messages (errors and logs), in order
    requests: set[str]  # URLs the page asked for, other than file: and data:
    stdout: str
    stderr: str


def binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _page_requests(netlog: Path) -> set[str]:
    text = netlog.read_text(errors="replace") if netlog.exists() else ""
    urls = {json.loads(f'"{u}"') for u in _URL.findall(text)}
    return {u for u in urls if not u.startswith(("file:", "data:"))
            and not (urlsplit(u).hostname or "").endswith(_CHROMIUM_OWN)}


def _run(args: list[str], timeout: float) -> Run:
    exe = binary()
    assert exe, "chromium is not installed"
    with tempfile.TemporaryDirectory(prefix="probe-chromium-") as tmp:
        netlog = Path(tmp) / "net.json"
        done = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp}/profile",
                               f"--log-net-log={netlog}", *args],
                              capture_output=True, text=True, timeout=timeout)
        requests = _page_requests(netlog)
    console = [m.group(1) for line in done.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Run(console, requests, done.stdout, done.stderr)


def screenshot(page: Path, png: Path, width: int, height: int, timeout: float = 90) -> Run:
    run = _run([f"--screenshot={png}", f"--window-size={width},{height}", page.as_uri()],
               timeout)
    assert png.exists(), run.stderr[-2000:]
    return run


def dom(page: Path, width: int = 1280, height: int = 900, timeout: float = 90) -> Run:
    """The DOM once the page has loaded (its scripts have run), on stdout."""
    return _run(["--dump-dom", f"--window-size={width},{height}", page.as_uri()], timeout)


def pdf(page: Path, out: Path, timeout: float = 90) -> Run:
    """The page printed (its print CSS applies), as chromium's print-to-PDF makes it."""
    run = _run(["--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri()], timeout)
    assert out.exists(), run.stderr[-2000:]
    return run
