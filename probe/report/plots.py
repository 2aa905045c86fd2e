"""The report's figures as inline SVG (matplotlib, imported here only, on first use).

Figures are built with matplotlib's object API (no pyplot: no GUI backend, no global state);
text stays text (`svg.fonttype: none`, a generic font family: nothing is fetched) and the ids
inside each SVG are prefixed with the figure's name, so several figures inline in one page never
share an id; the output is the same for the same data.
"""

from __future__ import annotations

import io
import re
import statistics
from collections.abc import Sequence
from typing import Any

from probe.report.fmt import COLOURS, CONTROL_COLOUR, TARGET_COLOUR, rate
from probe.report.model import VERDICTS, Throttle, Timeline

_RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}
_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.S)
MAX_TIMELINE_ROWS = 60


def _svg(fig: Any, salt: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = _PROLOGUE.sub("", buf.getvalue(), count=1)  # no XML prologue or DOCTYPE inline
    # matplotlib numbers its ids per figure (axes_1, ...): prefix them, and every reference
    svg = re.sub(r'(\bid="|url\(#|href="#)', lambda m: f"{m.group(1)}{salt}-", svg)
    # scale with the page: the drawing keeps its aspect ratio through its viewBox
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="plot"', svg,
                  count=1)


def _drawn(draw: Any, width: float, height: float, salt: str) -> str:
    """`draw(fig)` on a new figure, everything under the report's rc settings, as SVG."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({**_RC, "svg.hashsalt": salt}):
        fig = Figure(figsize=(width, height), layout="constrained")
        draw(fig)
        return _svg(fig, salt)


def _colour(side: str) -> str:
    return TARGET_COLOUR if side == "target" else CONTROL_COLOUR


def _curves(ax: Any, t: Throttle) -> None:
    """Each flow's cumulative KiB where and when it ran: target and control flows alternate
    (A B A B) over the same path, so a policed target crawls between controls that finish at
    once."""
    labelled: set[str] = set()
    for f in t.flows:
        if not f.samples:
            continue
        label = None if f.side in labelled else f"{f.side}: SNI {f.sni or '(own object)'}"
        labelled.add(f.side)
        xs = [f.start + s for s, _ in f.samples]
        ys = [b / 1024 for _, b in f.samples]
        ax.plot(xs, ys, color=_colour(f.side), lw=1.8, marker="o", ms=2.5, label=label)
    top = max((f.bytes_received for f in t.flows), default=1024) / 1024
    ax.set_ylim(0, top * 1.25)  # room for the legend above the tallest flow
    ax.set_xlabel("seconds since the target's measurement began")
    ax.set_ylabel("KiB received by the flow")
    ax.set_title("Every flow, in the order they ran", loc="left", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
    ax.grid(alpha=0.3)


def _rates(ax: Any, t: Throttle) -> None:
    """Each flow's average rate on a log axis, the medians written above, the estimate's
    steady rates (what the verdict used) as dashed lines."""
    for y, side in ((1, "target"), (0, "control")):
        values = [g for f in t.flows if f.side == side and (g := f.average_bps())]
        if not values:
            continue
        ax.scatter(values, [y] * len(values), color=_colour(side), s=30, zorder=3, alpha=0.8)
        middle = statistics.median(values)
        ax.annotate(rate(middle), (middle, y), xytext=(0, 10), textcoords="offset points",
                    ha="center", color=_colour(side), fontsize=9, fontweight="bold")
    for y, bps, side in ((1, t.rate_bps, "target"), (0, t.control_rate_bps, "control")):
        if bps:
            ax.plot([bps, bps], [y - 0.35, y + 0.35], ls="--", lw=1.2, color=_colour(side))
    ax.set_xscale("log")
    ax.set_yticks([0, 1], ["control", "target"])
    ax.set_ylim(-0.6, 1.7)
    ax.set_xlabel("average rate per flow (bit/s, log)")
    ax.set_title("Rate per flow (dashed: steady rate)", loc="left", fontsize=10)
    ax.grid(alpha=0.3, axis="x")


def throughput_svg(t: Throttle) -> str:
    """Target flows against control flows: the curves and the rates."""
    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, width_ratios=[1.6, 1])
        _curves(left, t)
        _rates(right, t)

    return _drawn(draw, 8.0, 3.0, f"flows-{t.anchor}")


def timeline_svg(timelines: Sequence[Timeline]) -> str:
    """One row per target, a square per measurement coloured by its verdict, over time."""
    from datetime import datetime

    shown = list(reversed(timelines[:MAX_TIMELINE_ROWS]))  # the first listed on top

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        seen: set[str] = set()
        for y, line in enumerate(shown):
            for p in line.points:
                when = datetime.strptime(p.time, "%Y-%m-%d %H:%M:%S")
                ax.scatter([when], [y], marker="s", s=60, color=COLOURS.get(p.verdict, "#000"),
                           label=None if p.verdict in seen else p.verdict)
                seen.add(p.verdict)
        ax.set_yticks(range(len(shown)), [line.target for line in shown])
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.set_xlabel("measurement start (UTC)")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: VERDICTS.index(labels[i])
                       if labels[i] in VERDICTS else len(VERDICTS))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3, axis="x")
        fig.autofmt_xdate()

    return _drawn(draw, 8.0, 0.9 + 0.28 * len(shown), "timeline")
