"""One practice across every indicator at a period: where it stands against the network, the
patients who could gain (gain.py), and its trend (the practice page, CSV and pack)."""

from __future__ import annotations

import math
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from . import areas, gain, service, stats
from .entries import Entry, entry, flat_from_row, out_of_season, unjudged
from .entries_store import PracticeRow
from .figures import (
    among_practices,
    change_dict,
    few_peers,
    in_season_counts,
    pool_coarse,
    pooled_as_shown,
    rounded,
    season_changes,
)
from .listing import Period, indicator_titles, period_of, resolve
from .viewer import PracticeLabel, Viewer


class PracticeHeader(PracticeLabel):
    """The practice a practice view is of, with its published attributes."""

    list_size: int
    imd_decile: int


class PracticeView(TypedDict):
    practice: PracticeHeader
    period: Period
    #: one entry per indicator (:data:`.entries.Entry`, plus the indicator, its title, area,
    #: register flag, the network's pooled rate, ABC, median and method, the gap to the ABC,
    #: the patients who could gain and, with history, its trend and changes)
    indicators: list[Entry]
    #: whether the practice sent anything for the period (else every indicator is absent)
    submitted: bool


def practice_view(
    session: Session, viewer: Viewer, ods: str, period: str | None = None, history: bool = True
) -> PracticeView:
    """Every indicator for one practice at a period (default: latest), with its trend across
    every stored period. Each carries its clinical area, whether it is a register, and the
    patients who could gain (gain.py); the indicators come most patients who could gain
    first, then the registers (areas.py), which are never set against the benchmark. A seasonal
    indicator out of season (areas.in_season) has no figure at that period, and no rate in its
    trend at any period out of season: each says so."""
    p = viewer.require(ods)
    start, end = resolve(session, period)
    titles = indicator_titles(session)
    rows = service.practice_history(session, ods)
    summ = {(s.indicator, s.period_end): s for s in service.summaries(session)}
    unknown_of = service.unknown_included(session, viewer)
    by_ind: dict[str, list[PracticeRow]] = {}
    for r in rows:
        if r.period_end <= end:  # a past period's view shows nothing later than it
            by_ind.setdefault(r.indicator, []).append(r)
    items = []
    for ind, hist in sorted(by_ind.items()):
        cur = next((r for r in hist if r.period_end == end), None)
        s = summ.get((ind, end))
        register = areas.is_register(ind)
        unknown = unknown_of(ind, end, s.included) if s is not None else 0
        coarse = pool_coarse(viewer.coarse, unknown)
        few = s is not None and few_peers(unknown, viewer.bands.min_peers)
        measured = areas.in_season(ind, end)
        if few or not measured:
            # pooled from too few other practices: not shown here (figures.few_peers); or not a
            # measure at all, out of season
            s = None
        # the benchmark as this viewer is shown it: gap and gain agree with what is on screen
        abc = among_practices(s.abc, coarse) if s and not register else None
        known = titles.get(ind)
        item: Entry = {
            "indicator": ind,
            "title": known["title"] if known is not None else ind,
            "area": areas.area_of(ind),
            "register": register,
            "pooled": pooled_as_shown(s.pooled, coarse) if s else None,
            "abc": abc,
            "median": among_practices(s.median, coarse) if s else None,
            # whether pooled, abc and median are to whole percentage points: said so
            "whole_points": coarse,
            "method": s.method if s else None,
        }
        if cur is not None and not measured:
            item.update(out_of_season(entry(viewer, flat_from_row(cur), detail=True)))
            item.update(gap_to_abc=None, could_gain=None)
        elif cur is not None:
            own = entry(viewer, flat_from_row(cur), detail=True)
            # no verdict against limits this view does not show
            item.update(unjudged(own) if few else own)
            item["gap_to_abc"] = (
                rounded(abc - cur.rate) if abc is not None and cur.rate is not None else None
            )
            item["could_gain"] = (
                None
                if register or s is None
                else gain.patients_could_gain(cur.numerator, cur.denominator, abc)
            )
        else:
            item.update(
                status="absent",
                rate=None,
                note="no submission for this period",
                gap_to_abc=None,
                could_gain=None,
                band=None,
            )
        if history:
            pts = [
                stats.TrendPoint(
                    r.period_end.isoformat(),
                    r.indicator_version or 0,
                    in_season_counts(ind, r.period_end, service.counts_of(r)),
                )
                for r in hist
            ]
            item["trend"] = [_trend_point(ind, r, summ, unknown_of, viewer) for r in hist]
            item["changes"] = season_changes(ind, [change_dict(c) for c in stats.changes(pts)])
        items.append(item)
    items.sort(key=gain_order)
    label = viewer.label(ods)
    header: PracticeHeader = {
        "id": label["id"],
        "name": label["name"],
        "identified": label["identified"],
        "self": label["self"],
        "pcn": p.group,
        "list_size": p.list_size,
        "imd_decile": p.imd_decile,
    }
    submitted = any(r.period_end == end for r in rows)
    return {
        "practice": header,
        "period": period_of(start, end),
        "indicators": items,
        "submitted": submitted,
    }


def gain_order(item: Entry) -> tuple[Any, ...]:
    """Registers last; before them, most patients who could gain first, then the widest gap
    below the benchmark (an unknown figure after every known one), then the id."""
    gain_, gap = item.get("could_gain"), item.get("gap_to_abc")
    return (
        item["register"],
        -(gain_ if gain_ is not None else -1),
        -(gap if gap is not None else -math.inf),
        item["indicator"],
    )


def _trend_point(
    ind: str, r: PracticeRow, summ: dict[Any, Any], unknown_of: Any, viewer: Viewer
) -> dict[str, Any]:
    """One period of a practice's trend on ``ind``: none of its figures out of season."""
    if not areas.in_season(ind, r.period_end):
        return {"period": period_of(r.period_start, r.period_end), "rate": None,
                "status": "out_of_season", "band": None, "indicator_version": r.indicator_version,
                "network": None}  # fmt: skip
    return {"period": period_of(r.period_start, r.period_end), "rate": rounded(r.rate), "status": r.status,
            "band": r.band, "indicator_version": r.indicator_version,
            "network": _network_rate(summ.get((ind, r.period_end)), unknown_of, viewer)}  # fmt: skip


def _network_rate(s: Any, unknown_of: Any, viewer: Viewer) -> float | None:
    """The network's pooled rate of one period as ``viewer`` is shown it (``unknown_of``:
    :func:`.service.unknown_included`)."""
    if s is None:
        return None
    unknown = unknown_of(s.indicator, s.period_end, s.included)
    if few_peers(unknown, viewer.bands.min_peers):
        return None
    return pooled_as_shown(s.pooled, pool_coarse(viewer.coarse, unknown))
