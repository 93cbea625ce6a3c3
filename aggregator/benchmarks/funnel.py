"""One indicator's funnel for one period and peer group: its summary, limits curve and every
practice's position as the viewer may see it (:mod:`.entries`). The whole network at the stored
method is spliced from JSON the refresh stored (:func:`funnel_json`); anything else is built."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np
from sqlalchemy.orm import Session

from ..errors import BadRequestError, NotFoundError
from . import areas, entries_store, render, service, stats
from .entries import Entry, entry, flat_from_result, flat_from_row, unjudged
from .figures import (
    Limits,
    Summary,
    coarse_summary,
    few_peers,
    limits_dict,
    out_of_season_pool,
    pool_coarse,
    summary_dict,
    summary_from_row,
    withhold_pool,
)
from .listing import Period, known_indicator, period_of, resolve, title_of
from .models import BenchSummary
from .peers import NOWHERE, PeerGroup, PeerGroupRef, Place, peer_places, resolve_group
from .render import Flat
from .viewer import Viewer

CURVE_POINTS = 60
METHODS = ("exact", "normal", "wilson", "multiplicative", "additive", "auto")
#: What the dashboard says where a catalogue indicator has no stored value for a period.
NO_DATA = "no practice has sent {indicator} for {period}"


class CurvePoint(Limits):
    """The funnel limits at one denominator."""

    denominator: int


class FunnelView(TypedDict):
    indicator: str
    title: str
    period: Period
    peer_group: PeerGroupRef
    summary: Summary
    limits_curve: list[CurvePoint]
    practices: list[Entry]
    no_data: NotRequired[str]  # an indicator no practice sent for the period (empty_funnel_view)
    #: a seasonal indicator's period out of season (areas.in_season): why there is no figure,
    #: no limit and no practice in the view
    out_of_season: NotRequired[str]


@dataclass
class FunnelData:
    indicator: str
    start: dt.date
    end: dt.date
    group: PeerGroup
    summary: stats.Summary
    flats: list[Flat]
    version: int | None
    versions: str


def _check_method(method: str | None) -> None:
    if method is not None and method not in METHODS:
        raise BadRequestError(f"method={method!r}: use {', '.join(METHODS)}", code="bad-method")


def _stored_summary(
    session: Session, indicator: str, period: str | None
) -> tuple[dt.date, dt.date, BenchSummary]:
    start, end = resolve(session, period, indicator)
    summ = service.summary_row(session, indicator, start, end)
    if summ is None:
        raise NotFoundError(f"{indicator}: no benchmark for period {end}", code="no-benchmarks")
    return start, end, summ


def funnel_data(session: Session, viewer: Viewer, indicator: str, period: str | None, peer: str | None = None,
                group: str | None = None, anchor: str | None = None, method: str | None = None) -> FunnelData:  # fmt: skip
    """The summary and every practice's flat result of one funnel (a peer group's, or another
    method's, recomputed from the stored counts)."""
    _check_method(method)
    start, end, summ = _stored_summary(session, indicator, period)
    pg = resolve_group(viewer, peer, group, anchor)
    rows = service.practice_rows(session, indicator, start, end)
    if pg.members is None and method in (None, "auto", summ.method):
        summary = summary_from_row(summ)
        flats = [flat_from_row(r) for r in rows]
    else:
        # A peer group (or another method): recompute from the stored counts of this one
        # (indicator, period) only.
        keep = {
            r.practice_ods: r for r in rows if pg.members is None or r.practice_ods in pg.members
        }
        f = stats.funnel([service.counts_of(r) for r in keep.values()], method=method or "auto")  # type: ignore[arg-type]
        summary = f.summary
        flats = [flat_from_result(res, keep[res.practice]) for res in f.practices]
    return FunnelData(
        indicator, start, end, pg, summary, flats, summ.indicator_version, summ.versions
    )


def limit_curve(summary: stats.Summary, max_n: int) -> list[CurvePoint]:
    if summary.pooled is None or max_n <= 0:
        return []
    ns = np.unique(np.geomspace(1, max(2, int(max_n * 1.15)), CURVE_POINTS).astype(int))
    out: list[CurvePoint] = []
    for n, lim in zip(ns, stats.limits_for(summary, ns, summary.method), strict=True):
        lims = limits_dict(lim)
        assert lims is not None
        out.append({"denominator": int(n), **lims})
    return out


def _funnel(
    session: Session,
    fd: FunnelData,
    max_n: int,
    practices: list[Entry],
    viewer: Viewer,
    unknown: int | None = None,
) -> FunnelView:
    """The view around ``practices``. ``unknown``: how many practices in the pool the viewer
    cannot identify (default: counted in ``fd.flats``); a pool holding any is shown coarsened
    (figures.pool_coarse), and one of too few such practices withheld (figures.few_peers). A
    seasonal indicator's period out of season (areas.in_season) has no pooled figure, no
    limits and no practice: it says why instead."""
    if not areas.in_season(fd.indicator, fd.end):
        blank = summary_dict(fd.summary, fd.version, fd.versions,
                             register=areas.is_register(fd.indicator))  # fmt: skip
        return {
            "indicator": fd.indicator,
            "title": title_of(session, fd.indicator),
            "period": period_of(fd.start, fd.end),
            "peer_group": fd.group.as_dict(),
            "summary": out_of_season_pool(blank),
            "limits_curve": [],
            "practices": [],
            "out_of_season": areas.out_of_season_text(fd.indicator),
        }
    if unknown is None:
        unknown = viewer.unknown_in(
            fd.summary.included, (f[0] for f in fd.flats if f[6] is not None)
        )
    coarse = pool_coarse(viewer.coarse, unknown)
    # a register is a prevalence, never set against a benchmark (areas.py)
    summary = summary_dict(fd.summary, fd.version, fd.versions, coarse=coarse,
                           register=areas.is_register(fd.indicator))  # fmt: skip
    # Drawn around the pooled rate and phi the view shows, so the limits carry nothing more
    # (figures.coarse_summary).
    curve = limit_curve(coarse_summary(fd.summary) if coarse else fd.summary, max_n)
    minimum = viewer.bands.min_peers
    if few_peers(unknown, minimum):
        # the limits are drawn around the pooled rate, so they go with it, and with them the
        # practices' bands: no verdict against limits the view does not show
        summary, curve = withhold_pool(summary, minimum), []
        practices = [unjudged(p) for p in practices]
    return {
        "indicator": fd.indicator,
        "title": title_of(session, fd.indicator),
        "period": period_of(fd.start, fd.end),
        "peer_group": fd.group.as_dict(),
        "summary": summary,
        "limits_curve": curve,
        "practices": practices,
    }


def funnel_view(session: Session, viewer: Viewer, indicator: str, period: str | None = None, peer: str | None = None,
                group: str | None = None, method: str | None = None, detail: bool = False) -> FunnelView:  # fmt: skip
    """One indicator's funnel for one period and peer group. ``detail`` adds each practice's
    limits, submission id and indicator version (the CSV export uses it)."""
    fd = funnel_data(session, viewer, indicator, period, peer, group, method=method)
    if not areas.in_season(indicator, fd.end):
        return _funnel(session, fd, 0, [], viewer)  # no figure to show (areas.in_season)
    # a practice that chose totals_only is in the totals (fd's summary), never a point of its own
    flats = [f for f in fd.flats if viewer.shows(f[0])]
    places = peer_places(viewer, flats) if viewer.coarse else {}
    dim = fd.group.dimension
    practices = [entry(viewer, f, detail, places.get(f[0]), dim) for f in flats]
    # Peers last and in pseudonym order, so row order says nothing about who they are.
    practices.sort(key=lambda p: (not p["identified"], p["id"]))
    if viewer.coarse:
        # the limits curve reaches the furthest point drawn, not the largest peer's count
        shown = (
            p["denominator"] if p["identified"] else p["x"]
            for p in practices
            if p["rate"] is not None
        )
        max_n = max((n for n in shown if n), default=0)
    else:
        # the denominators as shown: a peer's re-published, not its exact one (the curve's end
        # would give that back)
        shown = (
            f[3] if viewer.identifies(f[0]) else render.publish(f[3], f[4])[0]
            for f in flats
            if f[6] is not None
        )
        max_n = max((n for n in shown if n), default=0)
    return _funnel(session, fd, max_n, practices, viewer)


def empty_funnel_view(session: Session, viewer: Viewer, indicator: str, period: str | None = None,
                      peer: str | None = None, group: str | None = None) -> FunnelView:  # fmt: skip
    """``funnel_view``'s shape for a catalogue indicator that no practice sent for a period the
    network has (the dashboard shows this rather than an error): no practices, no limits."""
    known = known_indicator(session, indicator)
    start, end = resolve(session, period)
    summary = stats.Summary(
        practices=0, included=0, suppressed=0, empty=0, rounded=0, numerator=0, denominator=0,
        pooled=None, pooled_ci95=None, median=None, q1=None, q3=None, deciles=None,
        dispersion=stats.Dispersion(0, None, None, None, False, 0.0), method="exact", abc=None,
        abc_practices=0,
    )  # fmt: skip
    version = known["version"]
    fd = FunnelData(indicator, start, end, resolve_group(viewer, peer, group), summary, [],
                    version, str(version or ""))  # fmt: skip
    view = _funnel(session, fd, 0, [], viewer)
    view["no_data"] = NO_DATA.format(indicator=indicator, period=view["period"]["label"])
    return view


def _spliced(session: Session, fd: FunnelData, max_n: int, bodies: list[str], viewer: Viewer,
             unknown: int) -> str:  # fmt: skip
    """The funnel's JSON with the practices' entries (JSON texts, in order) spliced in."""
    head = json.dumps(_funnel(session, fd, max_n, [], viewer, unknown), separators=(",", ":"))
    assert head.endswith('"practices":[]}')
    if few_peers(unknown, viewer.bands.min_peers):
        # the pool is withheld (:func:`_funnel`): so are the bands judged against it
        bodies = [json.dumps(unjudged(json.loads(b)), separators=(",", ":")) for b in bodies]
    return head[:-3] + "[" + ",".join(bodies) + "]}"


def funnel_json(session: Session, viewer: Viewer, indicator: str, period: str | None = None, peer: str | None = None,
                group: str | None = None, method: str | None = None) -> str:  # fmt: skip
    """``funnel_view`` as JSON text. For the whole network at the stored method, each practice's
    entry is spliced from the JSON the refresh stored (render.py), so a national funnel costs a
    narrow read and string joins; anything else goes through ``funnel_view``."""
    _check_method(method)
    start, end, summ = _stored_summary(session, indicator, period)
    pg = resolve_group(viewer, peer, group)
    if (
        pg.members is not None
        or method not in (None, "auto", summ.method)
        or not areas.in_season(indicator, end)
    ):
        return json.dumps(
            funnel_view(session, viewer, indicator, period, peer, group, method),
            separators=(",", ":"),
        )
    if viewer.coarse:
        return _coarse_funnel_json(session, viewer, start, end, pg, summ)
    rows = _group_rows(session, summ)
    own, names = viewer.own, viewer.practices
    ident: list[tuple[str, str]] = []
    peers: list[tuple[str, str]] = []
    max_n = 0
    for r in rows:
        ods, den, rate = r.practice_ods, r.denominator, r.rate
        if not viewer.shows(ods):
            continue  # totals_only
        known = viewer.identifies(ods)
        if rate is not None and den:
            # the denominator as shown: a peer's re-published one (the curve's end shows it)
            n = den if known else (render.publish(den, r.denominator_status)[0] or 0)
            max_n = max(max_n, n)
        if known:
            head = (
                f'{{"id":{json.dumps(ods)},"name":{json.dumps(names[ods].name)},"identified":true,'
            )
            ident.append((ods, f'{head}"self":{"true" if ods == own else "false"},{r.item_json}}}'))
        else:
            alias = viewer.pseudonym(ods)
            peers.append(
                (
                    alias,
                    f'{{"id":"{alias}","name":"{alias}","identified":false,"self":false,{r.peer_json}}}',
                )
            )
    ident.sort()
    peers.sort()
    fd = FunnelData(indicator, start, end, pg, summary_from_row(summ), [],
                    summ.indicator_version, summ.versions)  # fmt: skip
    unknown = viewer.unknown_in(summ.included, (r.practice_ods for r in rows if r.rate is not None))
    return _spliced(session, fd, max_n, [x for _, x in ident + peers], viewer, unknown)


def _group_rows(session: Session, summ: BenchSummary) -> list[entries_store.PracticeRow]:
    """A group's practices computed from its stored counts and summary (entries_store.py)."""
    return entries_store.cached_group_rows(session, summ)


def _coarse_funnel_json(
    session: Session,
    viewer: Viewer,
    start: dt.date,
    end: dt.date,
    pg: PeerGroup,
    summ: BenchSummary,
) -> str:
    """``funnel_json`` for a practice's view of the whole network: the same entries as
    ``funnel_view`` builds, from a narrow read and cached JSON bodies."""
    computed = _group_rows(session, summ)
    unknown = viewer.unknown_in(
        summ.included, (r.practice_ods for r in computed if r.rate is not None)
    )
    rows = [
        r for r in computed if viewer.shows(r.practice_ods)
    ]  # not a practice that chose totals_only
    flats: list[Flat] = [
        (r.practice_ods, r.numerator, r.numerator_status, r.denominator, r.denominator_status,
         r.status, r.rate, None, None, None, None, r.approximate, None, r.band, None, r.note, None,
         None)
        for r in rows
    ]  # fmt: skip
    places = peer_places(viewer, flats)
    tails: dict[Place, str] = {}
    ident: list[tuple[str, str]] = []
    peers: list[tuple[str, str]] = []
    max_n = 0
    identified = viewer.identified
    for r, f in zip(rows, flats, strict=True):
        ods = f[0]
        if ods in identified:
            if f[6] is not None and f[3] and f[3] > max_n:
                max_n = f[3]
            name = json.dumps(viewer.practices[ods].name)
            own = "true" if ods == viewer.own else "false"
            body = render.own_coarse_json(r.item_json)
            ident.append((ods, f'{{"id":{json.dumps(ods)},"name":{name},"identified":true,"self":{own},{body}}}'))  # fmt: skip
            continue
        place = places.get(ods) or NOWHERE
        body, shown = render.coarse_peer_json(f)
        if shown and place.x and place.x > max_n:
            max_n = place.x
        tail = tails.get(place)
        if tail is None:
            x = "null" if place.x is None else str(place.x)
            tail = tails[place] = f'"size_band":{json.dumps(place.size_band)},"x":{x}}}'
        alias = viewer.pseudonym(ods)
        peers.append((alias, f'{{"id":"{alias}","name":"{alias}","identified":false,"self":false,{body},{tail}'))  # fmt: skip
    ident.sort()
    peers.sort()
    fd = FunnelData(summ.indicator, start, end, pg, summary_from_row(summ), [],
                    summ.indicator_version, summ.versions)  # fmt: skip
    return _spliced(session, fd, max_n, [x for _, x in ident + peers], viewer, unknown)
