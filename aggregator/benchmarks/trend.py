"""One indicator over time: the network's (or a peer group's) pooled rate per period and one
practice's, with period-to-period changes tested and indicator version breaks marked."""

from __future__ import annotations

import datetime as dt
from typing import NotRequired, TypedDict

from sqlalchemy.orm import Session

from ..errors import NotFoundError
from . import areas, entries_store, service, stats
from .figures import (
    Change,
    among_practices,
    change_dict,
    few_peers,
    in_season_counts,
    pool_coarse,
    pooled_as_shown,
    rounded,
    season_changes,
    shown_status,
)
from .listing import Period, known_indicator, period_of, title_of
from .models import BenchSummary
from .peers import PeerGroupRef, resolve_group
from .viewer import PracticeLabel, Viewer


class NetworkPoint(TypedDict):
    period: Period
    numerator: int | None
    denominator: int | None
    rate: float | None
    status: str
    abc: float | None
    indicator_version: int | None


class PracticePoint(TypedDict):
    period: Period
    numerator: int | None
    denominator: int | None
    rate: float | None
    status: str
    band: str | None
    ci95: list[float | None] | None
    indicator_version: int | None


class TrendView(TypedDict):
    indicator: str
    title: str
    peer_group: PeerGroupRef
    network: list[NetworkPoint]
    #: whether the pooled series and its changes are to whole percentage points
    #: (figures.pool_coarse): said so wherever they are shown
    whole_points: bool
    network_changes: list[Change]
    breaks: list[Period]
    note: str
    # with a practice:
    practice: NotRequired[PracticeLabel]
    practice_series: NotRequired[list[PracticePoint]]
    practice_changes: NotRequired[list[Change]]


def trend_view(session: Session, viewer: Viewer, indicator: str, practice: str | None = None, peer: str | None = None,
               group: str | None = None) -> TrendView:  # fmt: skip
    """The network's (or a peer group's) pooled rate per period, and one practice's, with
    period-to-period changes tested and version breaks marked. A seasonal indicator's periods
    out of season (areas.in_season) have no figure: their status says so, and no change to or
    from one is tested."""
    if practice is not None:
        viewer.require(practice)
    pg = resolve_group(viewer, peer, group, practice)
    summ = service.summaries(session, indicator)
    if not summ:
        known_indicator(session, indicator)  # a 404 unknown-indicator if it is not one
        raise NotFoundError(f"{indicator}: no benchmarks yet", code="no-benchmarks")
    versions = {s.period_end: s.indicator_version or 0 for s in summ}
    own = viewer.own if viewer.coarse else None
    # The viewer's own history, read once when the practice in view is the viewer's own.
    own_hist = service.practice_history(session, own, indicator) if own and practice == own else []
    if pg.members is None:
        net = [(s.period_start, s.period_end, _network_counts(s)) for s in summ]
        unknown_of = service.unknown_included(session, viewer, indicator)
        unknown = {s.period_end: unknown_of(indicator, s.period_end, s.included) for s in summ}
    else:
        per: dict[tuple[dt.date, dt.date], list[stats.Counts]] = {}
        unknown = {}
        for sm in summ:
            stored = entries_store.load(session, indicator, sm.period_start, sm.period_end)
            if stored is None:
                continue
            members = entries_store.group_counts(stored, pg.members)
            if not members:
                continue
            per[(sm.period_start, sm.period_end)] = members
            unknown[sm.period_end] = sum(
                1 for c in members if c.rate is not None and not viewer.identifies(c.practice)
            )
        net = [
            (s, e, stats.pool(c, pg.name))
            for (s, e), c in sorted(per.items(), key=lambda kv: kv[0][1])
        ]
    # a register is a prevalence, never set against a benchmark (areas.py)
    register = areas.is_register(indicator)
    abc = {s.period_end: None if register else s.abc for s in summ}
    net, withheld = _withhold_small_pools(viewer.bands.min_peers, net, unknown)
    for e in withheld:
        abc[e] = None
    unmeasured = {e for _, e, _ in net if not areas.in_season(indicator, e)}
    net = [(s, e, in_season_counts(indicator, e, c)) for s, e, c in net]
    for e in unmeasured:
        abc[e] = None
    # A pool holding practices the viewer cannot identify (every pool in a practice's view; the
    # network in a lead's) is shown coarsened: the pooled rate to whole points and no pooled
    # counts (figures.pool_coarse: two months' pools give back the counts of a practice between).
    coarse = pool_coarse(viewer.coarse, max(unknown.values(), default=0))
    network_series: list[NetworkPoint] = [
        {"period": period_of(s, e), "numerator": None if coarse else c.numerator,
         "denominator": None if coarse else c.denominator, "rate": pooled_as_shown(c.rate, coarse),
         "status": "out_of_season" if e in unmeasured else shown_status(c.status, coarse),
         "abc": among_practices(abc.get(e), coarse), "indicator_version": versions.get(e)}
        for s, e, c in net
    ]  # fmt: skip
    net_changes = stats.changes(
        [stats.TrendPoint(e.isoformat(), versions.get(e, 0), c) for _, e, c in net]
    )
    out: TrendView = {
        "indicator": indicator,
        "title": title_of(session, indicator),
        "peer_group": pg.as_dict(),
        "network": network_series,
        "whole_points": coarse,
        "network_changes": season_changes(
            indicator, [change_dict(c, pooled_coarse=coarse) for c in net_changes]
        ),
        "breaks": [
            period_of(s.period_start, s.period_end)
            for a, s in zip(summ, summ[1:], strict=False)
            if (a.indicator_version or 0) != (s.indicator_version or 0)
        ],
        "note": "changes are pooled two-proportion z-tests at 5%; a change of indicator version breaks the series",
    }
    if practice is not None:
        hist = (
            own_hist if practice == own else service.practice_history(session, practice, indicator)
        )
        pts = [
            stats.TrendPoint(
                r.period_end.isoformat(),
                r.indicator_version or 0,
                in_season_counts(indicator, r.period_end, service.counts_of(r)),
            )
            for r in hist
        ]
        out["practice"] = viewer.label(practice)
        out["practice_series"] = [_practice_point(indicator, r) for r in hist]
        out["practice_changes"] = season_changes(
            indicator, [change_dict(c) for c in stats.changes(pts)]
        )
    return out


def _practice_point(indicator: str, r: entries_store.PracticeRow) -> PracticePoint:
    """One period of a practice's series: no figure out of season (areas.in_season)."""
    if not areas.in_season(indicator, r.period_end):
        return {"period": period_of(r.period_start, r.period_end), "numerator": None,
                "denominator": None, "rate": None, "status": "out_of_season", "band": None,
                "ci95": None, "indicator_version": r.indicator_version}  # fmt: skip
    return {"period": period_of(r.period_start, r.period_end), "numerator": r.numerator, "denominator": r.denominator,
            "rate": rounded(r.rate), "status": r.status, "band": r.band,
            "ci95": [rounded(r.lo95), rounded(r.hi95)] if r.lo95 is not None else None,
            "indicator_version": r.indicator_version}  # fmt: skip


def _withhold_small_pools(
    minimum: int,
    net: list[tuple[dt.date, dt.date, stats.Counts]],
    unknown: dict[dt.date, int],
) -> tuple[list[tuple[dt.date, dt.date, stats.Counts]], set[dt.date]]:
    """Each period whose pool rests on too few practices the viewer cannot identify
    (figures.few_peers; ``unknown``: how many per period end) as withheld: no counts, no rate,
    no change tested."""
    out: list[tuple[dt.date, dt.date, stats.Counts]] = []
    withheld: set[dt.date] = set()
    for s, e, c in net:
        if few_peers(unknown.get(e, 0), minimum):
            withheld.add(e)
            c = stats.Counts(c.practice, None, None, "suppressed", "suppressed")
        out.append((s, e, c))
    return out, withheld


def _network_counts(s: BenchSummary) -> stats.Counts:
    """The network's pooled counts of one period. Nothing pooled because every practice's
    value is suppressed or unverified is "suppressed", not a rate of 0 of 0 ("no eligible
    patients", which is what a period where nobody is counted says)."""
    if s.included == 0 and s.suppressed > 0:
        return stats.Counts("network", None, None, "suppressed", "suppressed")
    status: stats.CountStatus = "rounded" if s.rounded else "exact"
    return stats.Counts("network", s.numerator, s.denominator, status, status)


def empty_trend_view(session: Session, viewer: Viewer, indicator: str, practice: str | None = None,
                     peer: str | None = None, group: str | None = None) -> TrendView:  # fmt: skip
    """``trend_view``'s shape for a catalogue indicator no practice has sent yet."""
    known = known_indicator(session, indicator)
    if practice is not None:
        viewer.require(practice)
    out: TrendView = {
        "indicator": indicator,
        "title": known["title"],
        "peer_group": resolve_group(viewer, peer, group, practice).as_dict(),
        "network": [],
        "whole_points": False,
        "network_changes": [],
        "breaks": [],
        "note": f"no practice has sent {indicator} yet",
    }
    if practice is not None:
        out["practice"] = viewer.label(practice)
        out["practice_series"] = []
        out["practice_changes"] = []
    return out
