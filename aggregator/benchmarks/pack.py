"""The practice pack: one printable page for a practice's improvement meeting.

For one practice and one period: every indicator with the practice's rate, the network's
summary (pooled rate, median, quartiles, 10th and 90th percentiles of practice rates: the
figures every viewer's funnel already shows, never one peer's value), the achievable benchmark
and the patients who could gain (gain.py), the change since the period three before it (last
quarter, for monthly periods) tested as the trend view tests it, the trend up to the period, and
a short narrative written from those numbers. Registers (areas.py) are reported apart, against
the network's prevalence only.

Access is :func:`.practice.practice_view`'s: the practice's own users, its network lead and admins.
No peer is named, pseudonymised or counted here: the network appears only as summary figures.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy.orm import Session

from . import areas, gain, service, stats
from .figures import among_practices, change_dict, few_peers, pool_coarse
from .listing import period_of
from .practice import practice_view
from .viewer import Viewer

#: "Last quarter": the period this many periods before the pack's (where the network has it).
QUARTER_BACK = 3


def _pct(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{nd}f}%"


def _patients(n: int) -> str:
    return f"{n:,} patient" + ("" if n == 1 else "s")


def practice_pack(
    session: Session, viewer: Viewer, ods: str, period: str | None = None
) -> dict[str, Any]:
    view = practice_view(session, viewer, ods, period)
    end = dt.date.fromisoformat(view["period"]["end"])
    spans = service.periods(session)
    ends = [e for _, e in spans]
    i = ends.index(end) if end in ends else -1
    then = ends[i - QUARTER_BACK] if i >= QUARTER_BACK else None
    then_period = period_of(*spans[i - QUARTER_BACK]) if then is not None else None
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
        }
        change = None
        rows = hist.get(ind, {})
        if then is not None and then in rows and end in rows:
            a, b = rows[then], rows[end]
            c = stats.changes(
                [
                    stats.TrendPoint(
                        then.isoformat(), a.indicator_version or 0, service.counts_of(a)
                    ),
                    stats.TrendPoint(
                        end.isoformat(), b.indicator_version or 0, service.counts_of(b)
                    ),
                ]
            )[0]
            change = change_dict(c)
        trend = [t for t in item.get("trend", []) if t["period"]["end"] <= end.isoformat()]
        items.append(item | {"spine": spine, "change": change, "trend": trend})
    measures = [i for i in items if not i["register"]]
    registers = [i for i in items if i["register"]]
    return {
        "practice": view["practice"],
        "period": view["period"],
        "then": then_period,
        "measures": measures,
        "registers": registers,
        "areas": areas.group_by_area(measures),
        "narrative": narrative(
            view["practice"]["name"],
            view["period"]["label"],
            then_period["label"] if then_period else None,
            measures,
            registers,
            submitted=view["submitted"],
            coarse=viewer.coarse,
        ),
        "submitted": view["submitted"],
        "formula": gain.FORMULA,
    }


def narrative(
    name: str,
    label: str,
    then: str | None,
    measures: list[dict[str, Any]],
    registers: list[dict[str, Any]],
    submitted: bool = True,
    coarse: bool = False,
) -> list[str]:
    """A few plain sentences, each written from the pack's numbers. The network's figures an
    indicator's ``whole_points`` says are to whole points (a practice's own view, a network
    lead's of a network holding practices it cannot identify), or all of them with ``coarse``,
    are said so ('85%')."""
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
    if not shown:
        out.append(
            f"{name} has no indicator value to report for {label}: every figure is suppressed by "
            "disclosure control, has nobody in its denominator, or was not sent."
        )
    else:
        low = [m for m in shown if (m.get("band") or "").startswith("low")]
        high = [m for m in shown if (m.get("band") or "").startswith("high")]
        within = len(shown) - len(low) - len(high)
        withheld = sum(1 for m in measures if m.get("status") == "suppressed")
        out.append(
            f"In {label}, {name} has a rate on {len(shown)} of {len(measures)} indicators"
            + (
                f" ({withheld} withheld by its own disclosure control: a small count, or "
                "withheld to protect another count)"
                if withheld
                else ""
            )
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
                f"{_pct(top.get('abc'), nd(top))}, practice {_pct(top.get('rate'))}). It is at or above "
                f"the benchmark on {len(at_abc) or 'none'} of them."
            )
        elif at_abc:
            out.append(
                f"It is at or above the achievable benchmark on all {len(at_abc)} indicators with a benchmark."
            )
    if then is None:
        out.append(f"There is no period three before {label} to compare with yet.")
    else:
        # Only indicators with a rate in both periods are compared: one withheld by disclosure
        # control (or with nobody eligible) in either period did not "not change".
        changed = [
            m
            for m in measures
            if m.get("change")
            and m["change"]["rate_from"] is not None
            and m["change"]["rate_to"] is not None
        ]
        up = [
            m
            for m in changed
            if m["change"]["beyond_chance"] and (m["change"]["difference"] or 0) > 0
        ]
        down = [
            m
            for m in changed
            if m["change"]["beyond_chance"] and (m["change"]["difference"] or 0) < 0
        ]
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
        text += "."
        if up:
            text += (
                " Rose: "
                + "; ".join(
                    f"{m['title']} ({_pct(m['change']['rate_from'])} to {_pct(m['change']['rate_to'])})"
                    for m in up[:3]
                )
                + "."
            )
        if down:
            text += (
                " Fell: "
                + "; ".join(
                    f"{m['title']} ({_pct(m['change']['rate_from'])} to {_pct(m['change']['rate_to'])})"
                    for m in down[:3]
                )
                + "."
            )
        out.append(text)
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
