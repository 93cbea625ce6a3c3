"""Practices x indicators at one period: each identified practice's funnel band on every
indicator (a network lead's grid; a practice user gets its own row), the indicators also grouped
by clinical area (areas.py)."""

from __future__ import annotations

from typing import Any, TypedDict

from sqlalchemy.orm import Session

from . import areas, service
from .entries import entry, out_of_season, unjudged
from .figures import among_practices, few_peers, pool_coarse, pooled_as_shown
from .funnel import funnel_data
from .listing import Period, indicator_titles, period_of, resolve
from .peers import PeerGroupRef, resolve_group
from .silent import not_submitted
from .viewer import PracticeLabel, Viewer

#: The fields of a practice's entry an overview cell keeps.
CELL_KEYS = ("rate", "band", "band_text", "status", "note", "approximate")


class OverviewColumn(TypedDict):
    indicator: str
    title: str
    area: str
    register: bool
    pooled: float | None
    abc: float | None
    #: whether ``pooled`` and ``abc`` are to whole percentage points (figures.pool_coarse)
    whole_points: bool
    method: str
    #: a seasonal indicator's period out of season (areas.in_season): no pooled rate, no
    #: benchmark, and every cell says so instead of a rate and band
    out_of_season: bool


class OverviewRow(PracticeLabel):
    #: indicator id -> the practice's CELL_KEYS fields on it
    cells: dict[str, dict[str, Any]]


class OverviewView(TypedDict):
    period: Period
    peer_group: PeerGroupRef
    indicators: list[OverviewColumn]
    areas: list[dict[str, Any]]  # areas.group_by_area of the indicators
    practices: list[OverviewRow]
    #: the practices the viewer may identify that sent nothing for the period (silent.py)
    not_submitted: list[PracticeLabel]


def overview_view(session: Session, viewer: Viewer, period: str | None = None, peer: str | None = None,
                  group: str | None = None) -> OverviewView:  # fmt: skip
    """Each identified practice's funnel band on every indicator at one period (a network
    lead's grid; a practice user gets its own row), with the indicators also grouped by
    clinical area (``areas``: areas.py), and the identified practices that sent nothing for
    the period (``not_submitted``)."""
    start, end = resolve(session, period)
    pg = resolve_group(viewer, peer, group)
    titles = indicator_titles(session)
    inds = [s.indicator for s in service.summaries(session, period_end=end)]
    cols: list[OverviewColumn] = []
    grid: dict[str, dict[str, dict[str, Any]]] = {}
    for ind in inds:
        fd = funnel_data(
            session,
            viewer,
            ind,
            end.isoformat(),
            pg.dimension,
            pg.name if pg.members is not None else None,
        )
        known = titles.get(ind)
        unknown = viewer.unknown_in(
            fd.summary.included, (f[0] for f in fd.flats if f[6] is not None)
        )
        few = few_peers(unknown, viewer.bands.min_peers)
        coarse = pool_coarse(viewer.coarse, unknown)
        measured = areas.in_season(ind, end)
        cols.append(
            {
                "indicator": ind,
                "title": known["title"] if known is not None else ind,
                "area": areas.area_of(ind),
                "register": areas.is_register(ind),
                # pooled from too few other practices: not shown in a practice's view
                "pooled": None
                if few or not measured
                else pooled_as_shown(fd.summary.pooled, coarse),
                # a register is never set against a benchmark (areas.py)
                "abc": None
                if few or areas.is_register(ind) or not measured
                else among_practices(fd.summary.abc, coarse),
                "whole_points": coarse,
                "method": fd.summary.method,
                "out_of_season": not measured,
            }
        )
        for f in fd.flats:
            if not viewer.identifies(f[0]):
                continue
            it = entry(viewer, f)
            if not measured:
                it = out_of_season(it)  # no rate and no band: not measured (areas.in_season)
            elif few:
                it = unjudged(it)  # no verdict against limits this view does not show
            grid.setdefault(f[0], {})[ind] = {k: it[k] for k in CELL_KEYS}
    rows: list[OverviewRow] = []
    for ods in sorted(grid):
        label = viewer.label(ods)
        rows.append(
            {
                "id": label["id"],
                "name": label["name"],
                "identified": label["identified"],
                "self": label["self"],
                "pcn": label["pcn"],
                "cells": grid[ods],
            }
        )
    return {
        "period": period_of(start, end),
        "peer_group": pg.as_dict(),
        "indicators": cols,
        "areas": areas.group_by_area(cols),
        "practices": rows,
        "not_submitted": not_submitted(session, viewer, end.isoformat())["practices"],
    }
