"""Server-side SVG charts: funnel plots, trend lines and sparklines.

Colour-blind-safe (Okabe-Ito), and never colour alone: every funnel band also has its own marker
shape and a text label in the point's ``<title>``. Points are focusable (``tabindex=0``) with an
``aria-label``, so the chart works from the keyboard and with a screen reader.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from ...benchmarks import areas

# Okabe & Ito (2008) palette.
BAND_STYLE: dict[str | None, dict[str, str]] = {
    "high_998": {
        "colour": "#0072B2",
        "shape": "triangle-up-filled",
        "symbol": "▲",
        "short": "high (99.8%)",
    },
    "high_95": {"colour": "#56B4E9", "shape": "triangle-up", "symbol": "△", "short": "high (95%)"},
    "within": {"colour": "#6b6b6b", "shape": "circle", "symbol": "●", "short": "within"},
    "low_95": {"colour": "#E69F00", "shape": "triangle-down", "symbol": "▽", "short": "low (95%)"},
    "low_998": {
        "colour": "#D55E00",
        "shape": "triangle-down-filled",
        "symbol": "▼",
        "short": "low (99.8%)",
    },
    None: {"colour": "#999999", "shape": "none", "symbol": "–", "short": "not shown"},
}
SELF_COLOUR = "#000000"
NETWORK_COLOUR = "#0072B2"
PRACTICE_COLOUR = "#CC79A7"
ABC_COLOUR = "#009E73"
#: A funnel's x axis: a measure's denominator is the patients it applies to; a register's is the
#: practice's list, of the register's ages where it has any (docs/indicators.md).
MEASURE_AXIS = "Denominator (patients eligible)"
REGISTER_AXIS = "Denominator (list size, of the register's ages)"


def pct(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{nd}f}%"


def ci(bounds: Sequence[float | None], nd: int = 1, level: str = "95%") -> str:
    """A confidence interval in words, to ``nd`` decimals. Where both ends round to the same
    figure (a large pool's interval to whole points) it says the interval is narrower than the
    figures shown, not '16%–16%', which reads as no uncertainty at all (a new-user run)."""
    lo, hi = pct(bounds[0], nd), pct(bounds[1], nd)
    if lo == hi and bounds[0] is not None:
        step, to = ("one point", "whole points") if nd == 0 else (f"{10**-nd:g} points", f"{nd} dp")
        return f"{level} CI under {step} wide: {lo} at both ends, to {to}"
    return f"{level} CI {lo}–{hi}"


def pts(difference: float | None, nd: int = 1) -> str:
    """A change in percentage points, signed, to ``nd`` decimals; a change that rounds to
    nothing reads +0.0 (or +0), not -0.0."""
    if difference is None:
        return "–"
    return f"{round(100 * difference, nd) + 0.0:+.{nd}f} pts"


def _marker(shape: str, x: float, y: float, colour: str, r: float = 5.0) -> str:
    if shape == "circle":
        return f'<circle class="mk" cx="{x:.1f}" cy="{y:.1f}" r="{r * 0.9:.1f}" fill="{colour}" fill-opacity="0.75" stroke="#222" stroke-width="0.6"/>'
    up = shape.startswith("triangle-up")
    filled = shape.endswith("filled")
    h = r * 1.2
    pts = (
        f"{x:.1f},{y - h:.1f} {x - h:.1f},{y + h * 0.8:.1f} {x + h:.1f},{y + h * 0.8:.1f}"
        if up
        else f"{x:.1f},{y + h:.1f} {x - h:.1f},{y - h * 0.8:.1f} {x + h:.1f},{y - h * 0.8:.1f}"
    )
    fill = colour if filled else "#ffffff"
    return (
        f'<polygon class="mk" points="{pts}" fill="{fill}" stroke="{colour}" stroke-width="1.8"/>'
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12:
        out.append(round(v, 10))
        v += step
    return out


def _x(p: dict[str, Any]) -> float:
    """Where a practice is drawn: its denominator, or for a peer in a practice's view (which
    shows no peer's denominator) the position its list-size band is drawn at."""
    return p.get("denominator") or p.get("x") or 0


#: Horizontal pixels between peers drawn at one list-size band's position, and the most a
#: peer is moved either way.
SPREAD_STEP, SPREAD_MAX = 7.0, 35.0


def _spread(pts: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Pixel offsets for peers drawn at a band's typical size (a practice's view, where no
    peer's denominator is shown): side by side in pseudonym order around that position, so each
    mark can be pointed at rather than hidden under the others. The order is the pseudonyms',
    which says nothing about size."""
    at: dict[float, list[str]] = {}
    for p in pts:
        if not p.get("denominator") and p.get("x"):
            at.setdefault(float(p["x"]), []).append(str(p["id"]))
    out: dict[str, float] = {}
    for ids in at.values():
        ids.sort()
        step = min(SPREAD_STEP, 2 * SPREAD_MAX / max(1, len(ids) - 1))
        for i, pid in enumerate(ids):
            out[pid] = (i - (len(ids) - 1) / 2) * step
    return out


def funnel_svg(
    view: dict[str, Any], *, width: int = 760, height: int = 440, compact: bool = False
) -> str:
    """The funnel plot of a funnel view (``aggregator.benchmarks.funnel.funnel_view``). A
    register's (areas.is_register) has no benchmark line or legend entry, and its x axis is
    the list (docs/indicators.md: a register's denominator is the practice's patients, of the
    register's ages where it has any), not patients eligible for a measure."""
    s = view["summary"]
    register = areas.is_register(view["indicator"])
    pts = [p for p in view["practices"] if p.get("rate") is not None and _x(p)]
    curve = view.get("limits_curve") or []
    ml, mr, mt, mb = (48, 12, 12, 36) if compact else (64, 150, 24, 52)
    pw, ph = width - ml - mr, height - mt - mb
    title = f"{view['title']} ({view['indicator']}), {view['period']['label']}: funnel plot"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="funnel" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="group" aria-label={quoteattr(title)} font-family="system-ui, sans-serif" font-size="12">'
        f"<title>{escape(title)}</title>"
    )
    if s.get("pooled") is None or not pts:
        # a pool withheld from this viewer has rates but no limits: said so, not "no rates"
        said = (
            "Out of season: not measured in this period."
            if view.get("out_of_season")
            else "Pooled rate withheld: no limits to plot."
            if s.get("withheld") and pts
            else "No released rates to plot."
        )
        return (
            head
            + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">{said}</text></svg>'
        )
    max_n = max([_x(p) for p in pts] + [c["denominator"] for c in curve] + [1])
    ys = [p["rate"] for p in pts] + [s["pooled"]] + ([s["abc"]] if s.get("abc") is not None else [])
    ys += [c["low_998"] for c in curve if c["denominator"] >= max_n * 0.05] + [
        c["high_998"] for c in curve if c["denominator"] >= max_n * 0.05
    ]
    ylo, yhi = max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05)
    if yhi - ylo < 0.1:
        ylo, yhi = max(0.0, ylo - 0.05), min(1.0, yhi + 0.05)

    def X(n: float) -> float:
        return float(ml + pw * n / (max_n * 1.05))

    def Y(r: float) -> float:
        return float(mt + ph * (1 - (min(max(r, ylo), yhi) - ylo) / (yhi - ylo)))

    out = [
        head,
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb" pointer-events="none"/>',
    ]
    for t in _nice_ticks(ylo, yhi):
        out.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{100 * t:g}%</text>')
    for t in _nice_ticks(0, max_n * 1.05):
        out.append(f'<text x="{X(t):.1f}" y="{mt + ph + 16}" text-anchor="middle">{t:g}</text>')
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">{REGISTER_AXIS if register else MEASURE_AXIS}</text>'
    )
    if not compact:
        out.append(
            f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">Rate</text>'
        )
    # limits: 99.8% solid, 95% dashed
    for key, dash in (
        ("low_998", ""),
        ("high_998", ""),
        ("low_95", ' stroke-dasharray="5 4"'),
        ("high_95", ' stroke-dasharray="5 4"'),
    ):
        line = " ".join(
            f"{X(c['denominator']):.1f},{Y(c[key]):.1f}" for c in curve if c.get(key) is not None
        )
        out.append(
            f'<polyline class="limit {key}" points="{line}" fill="none" stroke="#555" stroke-width="1.2"{dash}/>'
        )
    out.append(
        f'<line class="pooled" x1="{ml}" x2="{ml + pw}" y1="{Y(s["pooled"]):.1f}" y2="{Y(s["pooled"]):.1f}" stroke="{NETWORK_COLOUR}" stroke-width="1.5"/>'
    )
    if s.get("abc") is not None and not register:
        out.append(
            f'<line class="abc" x1="{ml}" x2="{ml + pw}" y1="{Y(s["abc"]):.1f}" y2="{Y(s["abc"]):.1f}" stroke="{ABC_COLOUR}" stroke-width="1.5" stroke-dasharray="2 3"/>'
        )
    spread = _spread(pts)
    # points: peers first, identified practices above them, the viewer's own last (on top)
    for p in sorted(pts, key=lambda p: (p.get("self", False), p["identified"])):
        style = BAND_STYLE.get(p.get("band"), BAND_STYLE[None])
        x, y = X(_x(p)) + spread.get(p["id"], 0.0), Y(p["rate"])
        who = p["name"] if p["name"] == p["id"] else f"{p['name']} ({p['id']})"
        approx = " (from rounded counts)" if p.get("approximate") else ""
        of = (
            f"of {p['denominator']}"
            if p.get("denominator")
            else f"(list size {p.get('size_band')}, drawn at the band's typical size)"
        )
        # a peer's rate is sent to whole points (render.py): said so, not with a false ".0"
        nd = 1 if p["identified"] else 0
        text = f"{who}: {pct(p['rate'], nd)} {of}{approx}; {p.get('band_text') or 'no band'}"
        ring = (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="{SELF_COLOUR}" stroke-width="2"/>'
            if p.get("self")
            else ""
        )
        label = (
            f'<text x="{x + 12:.1f}" y="{y - 8:.1f}" font-weight="bold">You</text>'
            if p.get("self") and not compact
            else ""
        )
        out.append(
            f'<g class="pt" tabindex="0" role="img" data-practice={quoteattr(p["id"])} data-band={quoteattr(str(p.get("band")))} '
            f"aria-label={quoteattr(text)}><title>{escape(text)}</title>{ring}{_marker(style['shape'], x, y, style['colour'])}{label}</g>"
        )
    if not compact:
        # a pool holding practices the viewer cannot identify is sent to whole points
        snd = 0 if s.get("whole_points") else 1
        lx, ly = ml + pw + 14, mt + 6
        items = [
            (
                "line",
                NETWORK_COLOUR,
                f"{group_label(view.get('peer_group'))} {pct(s['pooled'], snd)}",
                "",
            ),
            (
                "line",
                ABC_COLOUR,
                f"Benchmark (ABC) {pct(s.get('abc'), snd)}",
                ' stroke-dasharray="2 3"',
            ),
            ("line", "#555", "99.8% limits", ""),
            ("line", "#555", "95% limits", ' stroke-dasharray="5 4"'),
        ]
        if register:
            del items[1]  # a register is never set against a benchmark
        for i, (_, colour, text, dash) in enumerate(items):
            yy = ly + i * 18
            out.append(
                f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="1.5"{dash}/>'
            )
            out.append(f'<text x="{lx + 28}" y="{yy + 4}">{escape(text)}</text>')
        for j, band in enumerate(("high_998", "high_95", "within", "low_95", "low_998")):
            st = BAND_STYLE[band]
            yy = ly + (len(items) + j) * 18 + 6
            out.append(_marker(st["shape"], lx + 11, yy, st["colour"], 4.5))
            out.append(f'<text x="{lx + 28}" y="{yy + 4}">{escape(st["short"])}</text>')
    out.append("</svg>")
    return "".join(out)


def _trend_axes(labels: Sequence[str], breaks: Sequence[str], yrange: tuple[float, float],
                box: tuple[int, int, int, int], X: Callable[[int], float],
                Y: Callable[[float], float]) -> list[str]:  # fmt: skip
    """The trend chart's gridlines, y ticks, period labels and version-change rules."""
    ylo, yhi = yrange
    ml, mt, pw, ph = box
    out: list[str] = []
    for t in _nice_ticks(ylo, yhi):
        out.append(
            f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{100 * t:g}%</text>')
    # A label ("2026-01") takes about 50 px at this font: label every step-th period so that
    # labels are at least 60 px apart (at 12 months on this chart, every other one).
    gap = pw / max(1, len(labels) - 1)
    step = max(1, math.ceil(60 / gap)) if len(labels) > 1 else 1
    for i, lab in enumerate(labels):
        if i % step == 0:
            out.append(
                f'<text x="{X(i):.1f}" y="{mt + ph + 16}" text-anchor="middle">{escape(lab)}</text>'
            )
    for b in breaks:
        if b in labels:
            i = labels.index(b)
            xb = (X(i) + X(i - 1)) / 2 if i > 0 else X(i)
            out.append(
                f'<line class="break" x1="{xb:.1f}" x2="{xb:.1f}" y1="{mt}" y2="{mt + ph}" stroke="#000" stroke-dasharray="4 3"/>'
            )
            out.append(f'<text x="{xb + 4:.1f}" y="{mt + 12}">version change</text>')
    return out


def group_label(peer_group: dict[str, Any] | None) -> str:
    """What a chart calls the pooled line: "Network", or the peer group chosen."""
    if not peer_group or peer_group.get("dimension") == "network" or not peer_group.get("name"):
        return "Network"
    return str(peer_group["name"])


def trend_svg(series: Sequence[dict[str, Any]], *, practice: Sequence[dict[str, Any]] | None = None, breaks: Sequence[str] = (),
              title: str = "Trend", practice_label: str = "Practice", group_label: str = "Network",
              width: int = 760, height: int = 300, pooled_digits: int = 1, benchmark: bool = True) -> str:  # fmt: skip
    """Lines over periods: the network (or peer group, ``group_label``) rate, the ABC (not with
    ``benchmark=False``: a register's chart), and optionally one practice; a vertical rule
    where the indicator's version changed.
    ``pooled_digits``: the decimals the pooled lines' figures are said to (0 in a practice's
    own view, which gets them to whole points)."""
    labels = [s["period"]["label"] for s in series]
    ml, mr, mt, mb = 56, 150, 20, 40
    pw, ph = width - ml - mr, height - mt - mb
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="group" aria-label={quoteattr(title)} font-family="system-ui, sans-serif" font-size="12"><title>{escape(title)}</title>'
    )
    vals = [s["rate"] for s in series if s.get("rate") is not None] + [
        s["abc"] for s in series if benchmark and s.get("abc") is not None
    ]
    vals += [p["rate"] for p in (practice or []) if p.get("rate") is not None]
    if not labels or not vals:
        return head + '<text x="20" y="40">No data.</text></svg>'
    ylo, yhi = max(0.0, min(vals) - 0.05), min(1.0, max(vals) + 0.05)

    def X(i: int) -> float:
        return ml + (pw * i / max(1, len(labels) - 1) if len(labels) > 1 else pw / 2)

    def Y(r: float) -> float:
        return float(mt + ph * (1 - (r - ylo) / max(1e-9, yhi - ylo)))

    out = [
        head,
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb" pointer-events="none"/>',
    ]
    out += _trend_axes(labels, breaks, (ylo, yhi), (ml, mt, pw, ph), X, Y)

    def line(
        points: list[tuple[int, float]], colour: str, cls: str, dash: str = "", name: str = "",
        nd: int = 1,
    ) -> None:  # fmt: skip
        # A break or a missing point splits the line: never join across it.
        segs: list[list[tuple[int, float]]] = [[]]
        for i, r in points:
            if segs[-1] and (i != segs[-1][-1][0] + 1 or labels[i] in breaks):
                segs.append([])
            segs[-1].append((i, r))
        for seg in segs:
            if seg:
                out.append(
                    f'<polyline class="{cls}" points="{" ".join(f"{X(i):.1f},{Y(r):.1f}" for i, r in seg)}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
                )
        for i, r in points:
            text = f"{name} {labels[i]}: {pct(r, nd)}"
            out.append(
                f'<circle class="{cls}-pt" tabindex="0" cx="{X(i):.1f}" cy="{Y(r):.1f}" r="3.5" fill="{colour}" aria-label={quoteattr(text)}><title>{escape(text)}</title></circle>'
            )

    line(
        [(i, s["rate"]) for i, s in enumerate(series) if s.get("rate") is not None],
        NETWORK_COLOUR,
        "network",
        name=group_label,
        nd=pooled_digits,
    )
    line(
        [(i, s["abc"]) for i, s in enumerate(series) if benchmark and s.get("abc") is not None],
        ABC_COLOUR,
        "abc",
        ' stroke-dasharray="2 3"',
        "Benchmark (ABC)",
        nd=pooled_digits,
    )
    if practice:
        idx = {lab: i for i, lab in enumerate(labels)}
        line([(idx[p["period"]["label"]], p["rate"]) for p in practice if p.get("rate") is not None and p["period"]["label"] in idx],
             PRACTICE_COLOUR, "practice", ' stroke-dasharray="6 2"', practice_label)  # fmt: skip
    lx, ly = ml + pw + 14, mt + 8
    legend = [(NETWORK_COLOUR, group_label, "")]
    if benchmark:
        legend.append((ABC_COLOUR, "Benchmark (ABC)", ' stroke-dasharray="2 3"'))
    if practice:
        legend.append((PRACTICE_COLOUR, practice_label, ' stroke-dasharray="6 2"'))
    for k, (colour, text, dash) in enumerate(legend):
        yy = ly + 18 * k
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        # 18 characters fit beside the chart: a longer name is cut with an ellipsis, whole in
        # its tooltip
        shown = text if len(text) <= 18 else text[:17] + "…"
        tip = f"<title>{escape(text)}</title>" if shown != text else ""
        out.append(f'<text x="{lx + 28}" y="{yy + 4}">{tip}{escape(shown)}</text>')
    if practice and not any(p.get("rate") is not None for p in practice):
        # named in the legend but drawn nowhere: say why, under its name
        yy = ly + 18 * (len(legend) - 1) + 15
        out.append(
            f'<text class="no-rate" x="{lx + 28}" y="{yy}" font-size="10">no rate in any month</text>'
        )
    out.append("</svg>")
    return "".join(out)


#: A sparkline's vertical scale spans at least this much of a rate (10 percentage points), so
#: that a change of a point or two does not fill its height.
SPARK_MIN_SPAN = 0.10


def sparkline_svg(
    points: Sequence[float | None],
    *,
    width: int = 110,
    height: int = 26,
    label: str = "trend",
    upto: str | None = None,
) -> str:
    """A small line of rates over periods, without axes: broken where a period has no rate (a
    withheld or missing month is never bridged), a lone point drawn as a dot, and scaled to at
    least :data:`SPARK_MIN_SPAN` around its values; where no month has a rate, words saying so.
    ``upto``: the last period the points run to (a page of a past month draws none later), so
    those words say "up to" it: an indicator with no rate by 2025-12 may have one in 2026-11,
    and a bare "no rate in any month" said it never had."""
    vals = [p for p in points if p is not None]
    if not vals and upto:
        label = f"{label}: no rate in any month up to {upto}"
    head = f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label={quoteattr(label)}><title>{escape(label)}</title>'
    if not vals:  # every month withheld or missing: said, not an empty box
        words = f"no rate up to {escape(upto)}" if upto else "no rate in any month"
        return (
            f'{head}<text x="2" y="{height - 9}" font-size="9" fill="#595959">{words}</text></svg>'
        )
    if len(points) < 2:
        return head + "</svg>"
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, SPARK_MIN_SPAN)
    lo -= (span - (hi - lo)) / 2
    n = len(points)

    def xy(i: int, v: float) -> tuple[float, float]:
        return 2 + (width - 4) * i / (n - 1), height - 3 - (height - 6) * (v - lo) / span

    runs: list[list[tuple[float, float]]] = [[]]
    for i, v in enumerate(points):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(xy(i, v))
    out = [head]
    for run in runs:
        if len(run) == 1:
            (x, y) = run[0]
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" fill="{NETWORK_COLOUR}"/>')
        elif run:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{NETWORK_COLOUR}" stroke-width="1.5"/>'
            )
    return "".join(out) + "</svg>"


#: The height of an exported chart's caption line, above the chart.
CAPTION_HEIGHT = 24


def caption(view: dict[str, Any], kind: str, peer_group: dict[str, Any] | None) -> str:
    """What an exported chart (SVG or PNG) says above itself, so that it still says what it
    shows on a slide: the indicator, the period (a funnel's) and the peers it is compared
    with. ``kind`` is "funnel plot" or "trend"."""
    when = f", {view['period']['label']}" if kind != "trend" and view.get("period") else ""
    group = group_label(peer_group)
    peers = "the network" if group == "Network" else group
    return f"{view['title']} ({view['indicator']}){when}: {kind}, compared with {peers}"


def standalone(svg: str, caption: str | None = None, note: str = "") -> str:
    """An SVG file for download: the chart, under a line of ``caption`` when given, and over a
    line of ``note`` when given (a seasonal trend's months with no point: areas.gap_text)."""
    head = '<?xml version="1.0" encoding="UTF-8"?>\n'
    if caption is None:
        return head + svg
    m = re.match(r'<svg [^>]*?viewBox="0 0 (\d+) (\d+)"', svg)
    if m is None:
        raise ValueError("a chart without a viewBox cannot be captioned")
    chart_h = int(m.group(2))
    w, h = int(m.group(1)), chart_h + CAPTION_HEIGHT + (CAPTION_HEIGHT if note else 0)
    inner = svg.replace("<svg ", f'<svg y="{CAPTION_HEIGHT}" ', 1)
    under = (
        f'<text x="8" y="{h - 8}" font-size="12" class="note">{escape(note)}</text>' if note else ""
    )
    return (
        f'{head}<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        f'height="{h}" font-family="system-ui, sans-serif">'
        f'<rect width="{w}" height="{h}" fill="#fff"/>'
        f'<text x="8" y="{CAPTION_HEIGHT - 8}" font-size="13" font-weight="bold">'
        f"{escape(caption)}</text>{inner}{under}</svg>"
    )


def spine_svg(s: dict[str, Any], *, width: int = 300, height: int = 24, label: str = "") -> str:
    """One row of a Fingertips-style spine chart: the network's 10th-90th percentile range of
    practice rates (light bar) and quartiles (dark bar), its pooled rate (the black centre line),
    the achievable benchmark (green dashed), and the practice as its funnel band's marker. As in
    Fingertips, each row is centred on the network's rate and scaled to fit its own figures, so
    rows are compared by position, not by axis; the figures themselves are in the table."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spine" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label={quoteattr(label or "spine")}>'
        f"<title>{escape(label)}</title>"
    )
    centre = s.get("pooled") if s.get("pooled") is not None else s.get("median")
    if centre is None:
        said = "out of season: not measured" if s.get("out_of_season") else "no network rate"
        return head + f'<text x="4" y="{height / 2 + 4:.1f}" class="none">{said}</text></svg>'

    keys = ("p10", "p90", "q1", "q3", "abc", "rate", "median")
    reach = max([abs(s[k] - centre) for k in keys if s.get(k) is not None] + [0.005])
    half = reach * 1.12
    pad = 8

    def X(v: float) -> float:
        return float(pad + (width - 2 * pad) * (0.5 + (v - centre) / (2 * half)))

    mid = height / 2
    out = [head, f'<line x1="{pad}" x2="{width - pad}" y1="{mid}" y2="{mid}" stroke="#ddd"/>']
    if s.get("p10") is not None and s.get("p90") is not None:
        out.append(
            f'<rect class="range" x="{X(s["p10"]):.1f}" y="{mid - 6}" width="{max(1.0, X(s["p90"]) - X(s["p10"])):.1f}" height="12" fill="#c6dbef"/>'
        )
    if s.get("q1") is not None and s.get("q3") is not None:
        out.append(
            f'<rect class="iqr" x="{X(s["q1"]):.1f}" y="{mid - 6}" width="{max(1.0, X(s["q3"]) - X(s["q1"])):.1f}" height="12" fill="#6baed6"/>'
        )
    out.append(
        f'<line class="centre" x1="{X(centre):.1f}" x2="{X(centre):.1f}" y1="2" y2="{height - 2}" stroke="#000" stroke-width="2"/>'
    )
    if s.get("abc") is not None:
        out.append(
            f'<line class="abc" x1="{X(s["abc"]):.1f}" x2="{X(s["abc"]):.1f}" y1="1" y2="{height - 1}" stroke="{ABC_COLOUR}" stroke-width="2" stroke-dasharray="3 2"/>'
        )
    if s.get("rate") is not None:
        style = BAND_STYLE.get(s.get("band")) or BAND_STYLE["within"]
        shape = style["shape"] if style["shape"] != "none" else "circle"
        colour = style["colour"] if s.get("band") else SELF_COLOUR
        out.append(f'<g class="practice">{_marker(shape, X(s["rate"]), mid, colour, r=6.0)}</g>')
    out.append("</svg>")
    return "".join(out)
