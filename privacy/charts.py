"""Bar charts for report.html as small hand-written SVG documents: text, not pixels, in a few ms.

Why not a plotting library: report.html is part of every release bundle, and the central receiver
rebuilds it from privacy.json and accepts an upload only if the partner's copy is byte for byte the
same (connector/central/validate.py). With matplotlib that rebuild was ~0.15 s of CPU per upload,
94 % of the receiver's whole check, held the interpreter while readers waited
(bench/central_load.py), and rendered pixels that nobody could read back. An SVG made here is a few
kB of text: deterministic (fixed number formats, no timestamps, no ids), checked by the receiver as
text, and unable to load or run anything (it is shown through `<img src="data:image/svg+xml...">`,
where browsers run no script and fetch nothing).

Only what the report draws: horizontal bars (grouped or stacked, shares from 0 to 100 %) in one or
more panels, and vertical grouped bars. Text widths are estimated (an SVG cannot measure text
before a browser lays it out), generously, from the character count.

    svg = hbar_chart([Panel("Gender", [["Female"], ["Male"]], [Series("release", "#dd8452", [0.6, 0.4])])], x_label="share of records")
    src = "data:image/svg+xml;base64," + svg_base64(svg)
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from html import escape

FONT = 11  # px, the chart's text
SMALL = 9  # px, tick labels and values at bar ends
LINE = 13  # px between two lines of a label
CHAR_EM = 0.62  # a glyph's mean width in em, on the wide side of common sans-serif fonts (DejaVu Sans)
PAD = 8
SHARE_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Series:
    """One colour of bars: a value per category, in the categories' order."""

    name: str
    color: str
    values: list[float]


@dataclass(frozen=True)
class Panel:
    """One horizontal-bar chart of a small multiple: its title, each category's label (already
    wrapped into lines) and the series drawn for the categories."""

    title: list[str]
    labels: list[list[str]]
    series: list[Series]


def text_width(text: str, size: float = FONT) -> float:
    """The width `text` takes at most, roughly, in px (estimated from its length)."""
    return len(text) * CHAR_EM * size


def _n(value: float) -> str:
    """A coordinate, written the same way every time."""
    return f"{value + 0.0:.1f}".removesuffix(".0")


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: float = FONT, bold: bool = False, fill: str = "#222") -> str:
    weight = ' font-weight="bold"' if bold else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{_n(size)}" fill="{fill}"{weight}>{escape(text)}</text>'


def _rect(x: float, y: float, width: float, height: float, color: str) -> str:
    return f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(width, 0.0))}" height="{_n(height)}" fill="{color}"/>'


def _line(x1: float, y1: float, x2: float, y2: float, color: str = "#ccc") -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{color}" stroke-width="1"/>'


def _legend(series: list[Series], x: float, y: float) -> tuple[str, float]:
    """Swatches and names in a row from (x, y); returns the markup and its width."""
    parts, at = [], x
    for s in series:
        parts.append(_rect(at, y - 9, 10, 10, s.color))
        parts.append(_text(at + 14, y, s.name))
        at += 14 + text_width(s.name) + 16
    return "".join(parts), at - x


def svg_document(width: float, height: float, body: str, title: str = "") -> str:
    """A standalone SVG with its size, so an `<img>` keeps the aspect ratio when scaled down."""
    w, h = _n(math.ceil(width)), _n(math.ceil(height))
    head = f"<title>{escape(title)}</title>" if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="{FONT}">{head}'
            f'<rect width="{w}" height="{h}" fill="#fff"/>{body}</svg>')


def svg_base64(svg: str) -> str:
    """The SVG as base64, for a `data:image/svg+xml;base64,` URI."""
    return base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _hbar_panel(panel: Panel, x0: float, y0: float, width: float, label_width: float, *, stacked: bool, x_label: str) -> tuple[str, float]:
    """One panel at (x0, y0), `width` wide: title, bars and the share axis. Returns (markup, height)."""
    parts: list[str] = []
    y = y0
    for line in panel.title:
        y += LINE + 1
        parts.append(_text(x0, y, line, bold=True))
    y += 6
    left, right = x0 + label_width, x0 + width - (PAD if stacked else 34)  # room for "100%" at a bar's end
    span = right - left
    bars = 1 if stacked else len(panel.series)
    bar = 14 if bars == 1 else 9
    top = y
    rows: list[tuple[float, float]] = []  # (row top, row height)
    for lines in panel.labels:
        height = max(len(lines) * LINE + 4, bars * bar + 8)
        rows.append((y, height))
        y += height
    for tick in SHARE_TICKS:  # grid first, bars over it
        parts.append(_line(left + tick * span, top, left + tick * span, y))
    for (row_top, height), lines in zip(rows, panel.labels):
        first = row_top + height / 2 - (len(lines) - 1) * LINE / 2 + 4
        for i, line in enumerate(lines):
            parts.append(_text(left - 6, first + i * LINE, line, anchor="end"))
    for c, (row_top, height) in enumerate(rows):
        if stacked:
            at = left
            for s in panel.series:
                share = max(float(s.values[c]), 0.0)
                parts.append(_rect(at, row_top + (height - bar) / 2, share * span, bar, s.color))
                at += share * span
            continue
        start = row_top + (height - bars * bar) / 2
        for i, s in enumerate(panel.series):
            share = max(float(s.values[c]), 0.0)
            parts.append(_rect(left, start + i * bar, share * span, bar - 1, s.color))
            parts.append(_text(left + share * span + 3, start + i * bar + bar - 2, _percent(share), size=SMALL, fill="#555"))
    parts.append(_line(left, y, right, y, "#888"))
    for tick in SHARE_TICKS:
        parts.append(_text(left + tick * span, y + 12, _percent(tick), anchor="middle", size=SMALL, fill="#555"))
    y += 12
    if x_label:
        y += LINE + 1
        parts.append(_text(left + span / 2, y, x_label, anchor="middle"))
    return "".join(parts), y - y0 + PAD


def hbar_chart(panels: list[Panel], *, x_label: str, columns: int = 1, stacked: bool = False, width: float = 760, title: str = "") -> str:
    """Horizontal bars of shares (0 to 1), one panel per entry of `panels`, `columns` panels a row,
    with one legend for all on top (every series name once). `stacked`: a category's series are laid end to end (they add up
    to at most 1); else side by side, each with its value written at its end."""
    series = list({s.name: s for panel in panels for s in panel.series}.values())
    legend, _ = _legend(series, PAD, PAD + 10)
    y = PAD + 10 + PAD
    body = [legend]
    panel_width = (width - PAD) / max(columns, 1)
    for row in range(0, len(panels), max(columns, 1)):
        heights = []
        for col, panel in enumerate(panels[row:row + columns]):
            label_width = max((text_width(line) for lines in panel.labels for line in lines), default=0.0) + 10
            label_width = min(label_width, panel_width * 0.55)
            markup, height = _hbar_panel(panel, PAD + col * panel_width, y, panel_width - PAD, label_width, stacked=stacked, x_label=x_label)
            body.append(markup)
            heights.append(height)
        y += max(heights) + PAD
    return svg_document(width, y, "".join(body), title)


def nice_ceiling(value: float) -> tuple[float, float]:
    """(top, step) for an integer axis from 0 to at least `value`: steps of 1, 2 or 5 times a
    power of ten, at most five of them."""
    value = max(float(value), 1.0)
    magnitude = 10 ** math.floor(math.log10(value / 5)) if value > 5 else 1
    for factor in (1, 2, 5, 10):
        step = factor * magnitude
        if value / step <= 5:
            return math.ceil(value / step) * step, step
    raise AssertionError("unreachable: factor 10 always fits")


def vbar_chart(categories: list[str], series: list[Series], *, x_label: str, y_label: str = "", y_top: float | None = None,
               integer: bool = False, width: float = 520, height: float = 260, title: str = "") -> str:
    """Vertical bars, one group per category, one bar per series. The y axis runs from 0 to `y_top`
    (shares, written as %) or, with `integer`, to a round count above the largest value."""
    if integer:
        top, step = nice_ceiling(max((v for s in series for v in s.values), default=1.0))
        ticks = [step * i for i in range(int(round(top / step)) + 1)]
        tick_text = [str(int(t)) for t in ticks]
    else:
        top = y_top if y_top is not None else 1.0
        ticks = [t for t in SHARE_TICKS if t <= top]
        tick_text = [_percent(t) for t in ticks]
    legend = ""
    plot_top = PAD + 6
    if len(series) > 1:
        legend, _ = _legend(series, PAD, PAD + 10)
        plot_top = PAD + 10 + PAD + 6
    left = PAD + (LINE + 4 if y_label else 0) + max(text_width(t, SMALL) for t in tick_text) + 6
    right = width - PAD
    bottom = height - PAD - 2 * LINE - 4
    parts = [legend]
    for tick, text in zip(ticks, tick_text):
        y = bottom - tick / top * (bottom - plot_top)
        parts.append(_line(left, y, right, y))
        parts.append(_text(left - 4, y + 3, text, anchor="end", size=SMALL, fill="#555"))
    group = (right - left) / max(len(categories), 1)
    bar = min(group * 0.8 / max(len(series), 1), 48)
    for c, name in enumerate(categories):
        start = left + c * group + (group - bar * len(series)) / 2
        for i, s in enumerate(series):
            value = max(float(s.values[c]), 0.0)
            h = min(value / top, 1.0) * (bottom - plot_top)
            parts.append(_rect(start + i * bar, bottom - h, bar - 1, h, s.color))
        parts.append(_text(left + (c + 0.5) * group, bottom + 12, name, anchor="middle", size=SMALL, fill="#555"))
    parts.append(_line(left, bottom, right, bottom, "#888"))
    parts.append(_text(left + (right - left) / 2, bottom + 12 + LINE + 2, x_label, anchor="middle"))
    if y_label:
        middle = plot_top + (bottom - plot_top) / 2
        parts.append(f'<text x="{_n(PAD + 10)}" y="{_n(middle)}" text-anchor="middle" font-size="{FONT}" fill="#222" '
                     f'transform="rotate(-90 {_n(PAD + 10)} {_n(middle)})">{escape(y_label)}</text>')
    return svg_document(width, height, "".join(parts), title)


__all__ = ["Panel", "Series", "hbar_chart", "nice_ceiling", "svg_base64", "svg_document", "text_width", "vbar_chart"]
