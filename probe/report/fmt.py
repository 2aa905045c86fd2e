"""How numbers read in a report (the renderers' filters) and the colour of each verdict."""

from __future__ import annotations

COLOURS = {  # verdict -> colour, shared by the CSS and the plots
    "blocked": "#c62828",
    "throttled": "#e65100",
    "degraded": "#b8860b",
    "down": "#6a1b9a",
    "inconclusive": "#757575",
    "accessible": "#2e7d32",
}
TARGET_COLOUR = COLOURS["throttled"]
CONTROL_COLOUR = "#1565c0"


def rate(bps: float | None) -> str:
    """Bits per second the way people say them: 127 kbit/s, 1.45 Gbit/s."""
    if bps is None:
        return "–"
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            value = bps / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{bps:.0f} bit/s"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def number(x: float | None, digits: int = 2) -> str:
    """A ratio or p-value: 2 significant digits, small values in scientific notation."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.0f}%"
