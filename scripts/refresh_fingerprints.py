#!/usr/bin/env python3
"""Rebuild probe/data/ooni_fingerprints_{http,dns}.csv from a local checkout of
ooni/blocking-fingerprints, and the sidecar naming its commit and licence.

    python scripts/refresh_fingerprints.py PATH/TO/blocking-fingerprints [--out probe/data]

No network: it reads the checkout (and `git rev-parse HEAD` in it). Rows are copied as OONI
wrote them (every column), except a row whose pattern the probe cannot match in linear time,
which is left out and listed under "refused" in the sidecar. Exit 1 when a file is malformed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

from probe.measure.ooni_fingerprints import parse_csv

REPOSITORY = "https://github.com/ooni/blocking-fingerprints"
FILES = {"http": ("fingerprints_http.csv", "ooni_fingerprints_http.csv"),
         "dns": ("fingerprints_dns.csv", "ooni_fingerprints_dns.csv")}
SIDECAR = "ooni_fingerprints.json"
LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "COPYING")


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), *args], check=True, text=True,
                          capture_output=True).stdout.strip()


def _licence(checkout: Path) -> str | None:
    """The licence file's first line, or None: the repository states no licence."""
    for name in LICENCE_FILES:
        path = checkout / name
        if path.is_file():
            return f"{name}: {path.read_text('utf-8').strip().splitlines()[0]}"
    return None


def _keep_linear(text: str, kind: str) -> tuple[str, list[dict[str, str]]]:
    """The CSV without rows the matcher refuses (re-checked whole afterwards)."""
    reader = csv.DictReader(io.StringIO(text))
    kept, refused = io.StringIO(), []
    writer = csv.DictWriter(kept, fieldnames=reader.fieldnames or [], lineterminator="\r\n")
    writer.writeheader()
    for row in reader:
        try:
            parse_csv(_one_row(reader.fieldnames or [], row), kind)
        except ValueError as exc:
            refused.append({"name": row.get("name", ""), "reason": str(exc)})
            continue
        writer.writerow(row)
    return (text if not refused else kept.getvalue()), refused


def _one_row(fields: list[str], row: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return out.getvalue()


def refresh(checkout: Path, out: Path) -> dict:
    meta = {"repository": REPOSITORY, "commit": _git(checkout, "rev-parse", "HEAD"),
            "commit_date": _git(checkout, "log", "-1", "--format=%cI"),
            "licence": _licence(checkout), "files": {}}
    if meta["licence"] is None:
        meta["licence_note"] = ("The repository has no licence file at this commit; its README "
                                "names its sources (ooni/pipeline, Censored Planet, Citizen Lab "
                                "filtering-annotations).")
    for kind, (source, target) in FILES.items():
        text = (checkout / source).read_bytes().decode("utf-8")  # keep CRLFs and \r in patterns
        kept, refused = _keep_linear(text, kind)
        rows = parse_csv(kept, kind)  # the whole file once more: names unique, all valid
        (out / target).write_bytes(kept.encode("utf-8"))
        meta["files"][target] = {"source": source, "rows": len(rows), "refused": refused,
                                 "sha256": hashlib.sha256(kept.encode()).hexdigest()}
    (out / SIDECAR).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of ooni/blocking-fingerprints")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "probe" / "data")
    args = parser.parse_args(argv)
    try:
        meta = refresh(args.checkout, args.out)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        print(f"refresh_fingerprints: {exc}", file=sys.stderr)
        return 1
    for name, info in meta["files"].items():
        print(f"{name}: {info['rows']} rows, {len(info['refused'])} refused")
    print(f"from {meta['repository']} at {meta['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
