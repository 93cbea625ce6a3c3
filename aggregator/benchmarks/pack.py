"""The practice pack: one printable page for a practice's improvement meeting.

For one practice and one period: every indicator with the practice's rate, the network's
summary (pooled rate, median, quartiles, 10th and 90th percentiles of practice rates: the
figures every viewer's funnel already shows, never one peer's value), the achievable benchmark
and the patients who could gain (gain.py), the change since the month three months before
(last quarter) tested as the trend view tests it, the trend up to the period, and a short
narrative written from those numbers.

The comparison is with that calendar month, not with the third stored period back: with
months missing from the store, the third period back was a month eight months before, one the
practice never sent, and the pack compared with it. When the practice has nothing stored for
the month three before, the pack says so and compares nothing: an improvement meeting reads
"since last quarter" as the same three months every time, and a quietly nearer or further month
would make this month's change unlike last month's. A seasonal indicator (areas.py: flu
vaccination) is compared with the same month a year before instead, or not at all when the
practice has no data for it then: across three months its rate moves with the season. In a
period out of its season (areas.in_season: flu vaccination for periods ending April to August)
it is not measured: no rate, no network figure and no change, and the narrative says so.
Registers (areas.py) are reported apart, against the network's prevalence only.

Access is :func:`.practice.practice_view`'s: the practice's own users, its network lead and admins.
No peer is named, pseudonymised or counted here: the network appears only as summary figures.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from typing import Any

from sqlalchemy.orm import Session

from . import areas, gain, service, stats
from .figures import Change, among_practices, change_dict, few_peers, pool_coarse
from .listing import period_of
from .practice import practice_view
from .viewer import Viewer

#: "Last quarter": the month this many months before the pack's.
QUARTER_BACK = 3
#: A seasonal indicator (areas.is_seasonal) is compared with the same month this many months before.
YEAR_BACK = 12


def months_before(start: dt.date, end: dt.date, months: int) -> tuple[dt.date, dt.date]:
    """The period ``months`` calendar months before ``start``..``end``: each date moved back as
    many months, a month's last day kept its month's last day (2026-11-30 -> 2026-08-31)."""

    def back(d: dt.date, month_end: bool) -> dt.date:
        y, m = divmod(d.year * 12 + d.month - 1 - months, 12)
        last = calendar.monthrange(y, m + 1)[1]
        return dt.date(y, m + 1, last if month_end else min(d.day, last))

    return back(start, False), back(end, (end + dt.timedelta(days=1)).day == 1)


def _pct(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{nd}f}%"


def _patients(n: int) -> str:
    return f"{n:,} patient" + ("" if n == 1 else "s")


def practice_pack(
    session: Session, viewer: Viewer, ods: str, period: str | None = None
) -> dict[str, Any]:
    view = practice_view(session, viewer, ods, period)
    start = dt.date.fromisoformat(view["period"]["start"])
    end = dt.date.fromisoformat(view["period"]["end"])
    then_span, year_span = (
        months_before(start, end, QUARTER_BACK),
        months_before(start, end, YEAR_BACK),
    )
    then, year = then_span[1], year_span[1]
    summ = {(s.indicator, s.period_end): s for s in service.summaries(session)}
    unknown_of = service.unknown_included(session, viewer)
    hist: dict[str, dict[dt.date, Any]] = {}
    for r in service.practice_history(session, ods):
        hist.setdefault(r.indicator, {})[r.period_end] = r
    items = []
    for item in view["indicators"]:
        ind = item["indicator"]
        s = summ.get((ind, end))
        unknown = unknown_of(ind, end, s.included) if s is not None else 0
        coarse = pool_coarse(viewer.coarse, unknown)
        if s is not None and few_peers(unknown, viewer.bands.min_peers):
            s = None  # pooled from too few other practices (figures.few_peers)
        measured = areas.in_season(ind, end)
        if not measured:
            s = None  # not a measure in this period (areas.in_season)
        deciles = (
            [among_practices(v, coarse) for v in json.loads(s.deciles)]
            if s is not None and s.deciles
            else None
        )
        spine = {
            "pooled": item.get("pooled"),
            "median": among_practices(s.median, coarse) if s else None,
            "q1": among_practices(s.q1, coarse) if s else None,
            "q3": among_practices(s.q3, coarse) if s else None,
            "p10": deciles[0] if deciles else None,
            "p90": deciles[-1] if deciles else None,
            "abc": item.get("abc"),
            "rate": item.get("rate"),
            "band": item.get("band"),
            "out_of_season": not measured,
        }
        seasonal = areas.is_seasonal(ind)
        change = _change(hist.get(ind, {}), year if seasonal else then, end) if measured else None
        trend = [t for t in item.get("trend", []) if t["period"]["end"] <= end.isoformat()]
        items.append(
            item | {"spine": spine, "change": change, "seasonal": seasonal, "trend": trend}
        )
    measures = [i for i in items if not i["register"]]
    registers = [i for i in items if i["register"]]
    sent = {e for rows in hist.values() for e in rows}
    then_period, year_period = period_of(*then_span), period_of(*year_span)
    return {
        "practice": view["practice"],
        "period": view["period"],
        "then": then_period,
        # whether the practice has anything stored for the month three before (else no change)
        "then_sent": then in sent,
        "year_before": year_period,
        "year_sent": year in sent,
        "measures": measures,
        "registers": registers,
        "areas": areas.group_by_area(measures),
        "narrative": narrative(
            view["practice"]["name"],
            view["period"]["label"],
            then_period["label"],
            measures,
            registers,
            submitted=view["submitted"],
            coarse=viewer.coarse,
            then_sent=then in sent,
            year_before=year_period["label"],
        ),
        "submitted": view["submitted"],
        "formula": gain.FORMULA,
    }


def _change(rows: dict[dt.date, Any], then: dt.date, end: dt.date) -> Change | None:
    """The change of one indicator's rate from the period ending ``then`` to the one ending
    ``end``, tested as the trend view tests it, or None when the practice has either missing."""
    if then not in rows or end not in rows:
        return None
    a, b = rows[then], rows[end]
    return change_dict(
        stats.changes(
            [
                stats.TrendPoint(then.isoformat(), a.indicator_version or 0, service.counts_of(a)),
                stats.TrendPoint(end.isoformat(), b.indicator_version or 0, service.counts_of(b)),
            ]
        )[0]
    )


def narrative(
    name: str,
    label: str,
    then: str | None,
    measures: list[dict[str, Any]],
    registers: list[dict[str, Any]],
    submitted: bool = True,
    coarse: bool = False,
    then_sent: bool = True,
    year_before: str | None = None,
) -> list[str]:
    """A few plain sentences, each written from the pack's numbers. The network's figures an
    indicator's ``whole_points`` says are to whole points (a practice's own view, a network
    lead's of a network holding practices it cannot identify), or all of them with ``coarse``,
    are said so ('85%'). ``then``: the month three months before (None: there is none to
    name); ``then_sent``: whether the practice has anything stored for it. Seasonal measures
    (areas.is_seasonal) are compared with ``year_before``, the same month a year before, in a
    sentence of their own (module docstring)."""
    out: list[str] = []

    def nd(m: dict[str, Any]) -> int:
        return 0 if coarse or m.get("whole_points") else 1

    shown = [m for m in measures if m.get("rate") is not None]
    if not submitted:
        out.append(
            f"{name} has not submitted for {label}: nothing it sent for this month is stored. "
            f"To send it, run `fedqi-agent submit --period {label}` on the practice's machine "
            "(or let its scheduled `fedqi-agent run` send every month due)."
        )
        return out
    unmeasured = [m for m in measures if m.get("status") == "out_of_season"]
    if not shown:
        out.append(
            f"{name} has no indicator value to report for {label}: every figure is suppressed by "
            "disclosure control, has nobody in its denominator, was not sent, or is out of "
            "season."
        )
    else:
        low = [m for m in shown if (m.get("band") or "").startswith("low")]
        high = [m for m in shown if (m.get("band") or "").startswith("high")]
        within = len(shown) - len(low) - len(high)
        withheld = sum(1 for m in measures if m.get("status") == "suppressed")
        why = [
            f"{withheld} withheld by its own disclosure control: a small count, or withheld to "
            "protect another count"
        ] if withheld else []  # fmt: skip
        if unmeasured:
            why.append(f"{len(unmeasured)} out of season: not measured in this period")
        out.append(
            f"In {label}, {name} has a rate on {len(shown)} of {len(measures)} indicators"
            + (f" ({'; '.join(why)})" if why else "")
            + f". Against the network's funnel limits it is below on {len(low)}, above on "
            f"{len(high)} and within on {within}."
            + (
                " Below: "
                + "; ".join(
                    f"{m['title']} ({_pct(m['rate'])} against the network's "
                    f"{_pct(m.get('pooled'), nd(m))})"
                    for m in low[:3]
                )
                + ("; and others." if len(low) > 3 else ".")
                if low
                else ""
            )
        )
        at_abc = [m for m in shown if m.get("could_gain") == 0]
        gains = [m for m in measures if m.get("could_gain")]
        total = sum(m["could_gain"] for m in gains)
        if gains:
            top = max(gains, key=lambda m: m["could_gain"])
            out.append(
                f"Reaching the achievable benchmark on every indicator would mean "
                f"{total:,} more {'patient' if total == 1 else 'patients'} meeting the standard; "
                f"the most on {top['title']} ({_patients(top['could_gain'])}: benchmark "
                f"{_pct(top.get('abc'), nd(top))}, practice {_pct(top.get('rate'))}). It is already at or "
                f"above the benchmark on {len(at_abc) or 'none'} of the {len(shown)} "
                f"{'indicator' if len(shown) == 1 else 'indicators'} with a rate."
            )
        elif at_abc:
            out.append(
                f"It is at or above the achievable benchmark on all {len(at_abc)} indicators with a benchmark."
            )
    seasonal = [m for m in measures if m.get("seasonal") and m not in unmeasured]
    out.extend(_since(name, label, then, [m for m in measures if not m.get("seasonal")], then_sent))
    if seasonal and year_before is not None:
        out.append(_seasonal(seasonal, year_before))
    out.extend(_out_of_season(m, label) for m in unmeasured)
    regs = [r for r in registers if r.get("rate") is not None and r.get("pooled") is not None]
    if regs:
        lows = [r for r in regs if (r.get("band") or "").startswith("low")]
        out.append(
            f"Registers: {len(regs)} reported; {len(lows)} below the network's prevalence beyond "
            "chance"
            + (
                f" ({', '.join(r['title'] for r in lows[:3])}): worth a search for patients "
                "not yet diagnosed or coded."
                if lows
                else "."
            )
        )
    return out


def _compared(measures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measures with a rate in both periods: one withheld by disclosure control (or with
    nobody eligible) in either period did not "not change"."""
    return [
        m
        for m in measures
        if m.get("change")
        and m["change"]["rate_from"] is not None
        and m["change"]["rate_to"] is not None
    ]


def _moved(changed: list[dict[str, Any]], sign: int) -> list[dict[str, Any]]:
    """Those of ``changed`` that rose (``sign`` 1) or fell (-1) beyond chance."""
    return [
        m
        for m in changed
        if m["change"]["beyond_chance"]
        and not m["change"]["version_break"]
        and (m["change"]["difference"] or 0) * sign > 0
    ]


def _listed(word: str, ms: list[dict[str, Any]]) -> str:
    return (
        f" {word}: "
        + "; ".join(
            f"{m['title']} ({_pct(m['change']['rate_from'])} to {_pct(m['change']['rate_to'])})"
            for m in ms[:3]
        )
        + "."
        if ms
        else ""
    )


def _since(
    name: str, label: str, then: str | None, measures: list[dict[str, Any]], then_sent: bool
) -> list[str]:
    """The sentence on what changed since the month three before (last quarter)."""
    if then is None:
        return [f"There is no period three before {label} to compare with yet."]
    if not then_sent:
        return [
            f"{name} has no data stored for {then}, three months before {label}, so there is "
            "no change since last quarter to report (it sent nothing for that month, or the "
            "network has no benchmarks for it)."
        ]
    if not measures:
        return []
    changed = _compared(measures)
    up, down = _moved(changed, 1), _moved(changed, -1)
    brk = [m for m in changed if m["change"]["version_break"]]
    text = (
        f"Since {then}: {len(up)} {'indicator' if len(up) == 1 else 'indicators'} rose and "
        f"{len(down)} fell beyond chance"
        f" (two-proportion test, 5%); {len(changed) - len(up) - len(down) - len(brk)} did not change beyond chance"
    )
    if brk:
        text += f"; {len(brk)} changed definition, so are not compared"
    missing = len(measures) - len(changed)
    if missing:
        text += (
            f"; {missing} had no rate in one of the two periods (withheld by disclosure "
            "control, nobody eligible, or not sent), so are not compared"
        )
    return [text + "." + _listed("Rose", up) + _listed("Fell", down)]


def _out_of_season(measure: dict[str, Any], label: str) -> str:
    """The sentence on a seasonal measure in a period out of its season (areas.in_season)."""
    return (
        f"{measure['title']} is out of season in {label}: not measured in this period "
        f"({areas.season_text(measure['indicator'])}), so it has no rate, network figure or "
        "change here."
    )


def _seasonal(measures: list[dict[str, Any]], year_before: str) -> str:
    """The sentence on seasonal measures, compared with the same month a year before."""
    titles = ", ".join(m["title"] for m in measures)
    head = (
        f"{titles} {'follows' if len(measures) == 1 else 'follow'} the vaccination season, so "
        f"{'it is' if len(measures) == 1 else 'they are'} compared with the same month a year "
        f"before ({year_before}), not with last quarter"
    )
    changed = _compared(measures)
    if not changed:
        return head + f": there is no rate for {year_before} to compare with."
    up, down = _moved(changed, 1), _moved(changed, -1)
    return (
        head
        + f": {len(up)} rose and {len(down)} fell beyond chance since then."
        + _listed("Rose", up)
        + _listed("Fell", down)
    )
