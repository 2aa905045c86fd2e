"""The report model as one self-contained HTML file, Markdown, or JSON.

HTML: inline CSS, inline SVG figures and a few lines of script for sorting the table; nothing
is fetched from anywhere. Templates (jinja2, HTML autoescaped) live in `templates/`.
"""

from __future__ import annotations

import json
from functools import cache

import jinja2

from probe import __version__
from probe.report import fmt
from probe.report.model import VERDICTS, Flow, Report

FORMATS = ("html", "json", "md")


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell (one line, no column breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _flow_rate(f: Flow) -> str:
    shown = fmt.rate(f.goodput_bps)
    return f"{shown} ({f.failure})" if f.failure else shown


@cache
def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("probe.report", "templates"),
                             autoescape=autoescape, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(rate=fmt.rate, size=fmt.size, number=fmt.number, percent=fmt.percent,
                       cell=_cell, flow_rate=_flow_rate)
    return env


def html(report: Report) -> str:
    """One HTML page, figures drawn here (matplotlib is imported only now)."""
    from dataclasses import replace

    from probe.report import plots

    throttles = tuple(replace(t, plot=plots.throughput_svg(t)) for t in report.throttles)
    timeline = plots.timeline_svg(report.timelines) if report.timelines else ""
    return _env(True).get_template("report.html.j2").render(
        r=replace(report, throttles=throttles), timeline=timeline, version=__version__,
        rank={v: i for i, v in enumerate(VERDICTS)}, max_rows=plots.MAX_TIMELINE_ROWS)


def markdown(report: Report) -> str:
    return _env(False).get_template("report.md.j2").render(r=report)


def as_json(report: Report) -> str:
    return json.dumps({"probe_version": __version__, **report.to_dict()}, ensure_ascii=False,
                      indent=1) + "\n"


def render(report: Report, form: str) -> str:
    return {"html": html, "json": as_json, "md": markdown}[form](report)
