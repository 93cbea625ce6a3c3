"""What the benchmarks hold: indicators with their catalogue titles, periods, and the peer groups a
viewer may pick; and the period a request names."""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Catalogue as CatalogueRow
from ..errors import BadRequestError, NotFoundError
from . import service, stats
from .peers import PeerGroupOption, peer_group_options
from .viewer import Viewer


class IndicatorTitle(TypedDict):
    """An indicator's title, version and QOF code from the latest published catalogue."""

    title: str
    version: int | None
    qof: str | None


class ListedIndicator(IndicatorTitle):
    id: str


class Period(TypedDict):
    """A period as the views show it: ISO dates, and a label (``2026-01`` for a month)."""

    start: str
    end: str
    label: str


class Listing(TypedDict):
    indicators: list[ListedIndicator]
    periods: list[Period]
    peer_dimensions: list[str]
    peer_groups: list[PeerGroupOption]


def indicator_titles(session: Session) -> dict[str, IndicatorTitle]:
    """Titles and versions from the latest published catalogue (empty when none)."""
    head = session.execute(
        select(CatalogueRow.id, CatalogueRow.version, CatalogueRow.sha256)
        .order_by(CatalogueRow.published_at.desc(), CatalogueRow.version.desc())
        .limit(1)
    ).first()
    if head is None:
        return {}
    return _titles(session, *head)


_TITLES: dict[tuple[str, int, str], dict[str, IndicatorTitle]] = {}


def _titles(session: Session, cat_id: str, version: int, sha256: str) -> dict[str, IndicatorTitle]:
    # A published catalogue version never changes: parse it once per process.
    hit = _TITLES.get((cat_id, version, sha256))
    if hit is not None:
        return hit
    from protocol.catalogue import Catalogue
    from protocol.envelope import Envelope

    body = session.execute(
        select(CatalogueRow.envelope).where(
            CatalogueRow.id == cat_id, CatalogueRow.version == version
        )
    ).scalar_one()
    try:
        cat = Catalogue.from_bytes(Envelope.from_bytes(bytes(body)).payload_bytes())
    except Exception:
        return {}
    out: dict[str, IndicatorTitle] = {
        i.id: {"title": i.title, "version": i.version, "qof": i.qof} for i in cat.indicators
    }
    _TITLES[(cat_id, version, sha256)] = out
    return out


def title_of(session: Session, indicator: str) -> str:
    """The indicator's catalogue title (its id when the catalogue has none)."""
    known = indicator_titles(session).get(indicator)
    return known["title"] if known is not None else indicator


def known_indicator(session: Session, indicator: str) -> IndicatorTitle:
    """The indicator's entry in the latest published catalogue, or a bare one for an indicator
    stored under an earlier catalogue; 404 for any other."""
    known = indicator_titles(session).get(indicator)
    if known is not None:
        return known
    if indicator in service.indicators(session):
        return {"title": indicator, "version": None, "qof": None}
    raise NotFoundError(
        f"indicator {indicator}: not in the network's catalogue", code="unknown-indicator"
    )


def period_of(start: dt.date, end: dt.date) -> Period:
    label = (
        end.isoformat()[:7]
        if start.day == 1 and (end + dt.timedelta(days=1)).day == 1
        else f"{start}/{end}"
    )
    return {"start": start.isoformat(), "end": end.isoformat(), "label": label}


def resolve(
    session: Session, period: str | None, indicator: str | None = None
) -> tuple[dt.date, dt.date]:
    """The stored period ``period`` names (default: the latest), or a 404 that says why."""
    try:
        found = service.resolve_period(session, period, indicator)
    except service.PeriodSyntaxError as exc:
        raise BadRequestError(str(exc)) from None
    except ValueError as exc:
        raise NotFoundError(str(exc), code="unknown-period") from None
    if found is None:
        if indicator is None or not service.periods(session):
            what = f" for {indicator}" if indicator else ""
            raise NotFoundError(
                f"no benchmarks{what} yet: no submissions have been stored", code="no-benchmarks"
            )
        known_indicator(session, indicator)  # a 404 unknown-indicator if it is not one
        raise NotFoundError(
            f"no benchmarks for {indicator} yet: no practice has sent it", code="no-benchmarks"
        )
    return found


def catalogue_listing(session: Session, viewer: Viewer) -> Listing:
    """Indicators and periods with benchmarks, the peer-group dimensions, and the peer groups
    ``viewer`` may pick."""
    titles = indicator_titles(session)
    inds = service.indicators(session)
    return {
        "indicators": [
            {"id": i, **titles.get(i, {"title": i, "version": None, "qof": None})} for i in inds
        ],
        "periods": [period_of(s, e) for s, e in service.periods(session)],
        "peer_dimensions": list(stats.PEER_DIMENSIONS),
        "peer_groups": peer_group_options(viewer),
    }
