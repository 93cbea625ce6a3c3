"""What each viewer may see of the benchmarks: plain dicts shared by the JSON/CSV API and the
dashboard.

Identification follows :func:`aggregator.users.service.can_read_practice`: admin sees every
practice, a network lead the practices of their group (PCN), a practice or IG user their own.
Every other practice appears under :func:`pseudonym_for` (stable per viewer, not reversible) with
no name, ODS code or submission id, and its counts re-published under the network's stratified
rule (1-7 withheld, the rest rounded to 5) so exact small numbers never reach a peer; a peer whose
counts that rule withholds is shown as withheld, not drawn.

A practice's own view (practice and IG users: :attr:`Viewer.coarse`) shows less of a peer, so its
pseudonym cannot be matched to a published list size (docs/disclosure.md, "Pseudonyms"): no
counts, the rate to whole percentage points, and only a list-size band (bands merged until each
holds at least ``MIN_PEERS_PER_BAND`` peers of the view), drawn at one position shared by the
band; pseudonyms differ between peer-group dimensions, so a peer's pseudonym in the PCN funnel
is not its pseudonym in the network funnel.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hmac
import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.cells import stored_cells
from ..db.models import Catalogue as CatalogueRow
from ..db.models import Cell, Practice, User, table_of
from ..errors import BadRequestError, ForbiddenError, NotFoundError
from ..users.service import can_read_practice, shows_individually
from . import areas, gain, render, service, stats
from .models import BenchPractice, BenchSummary
from .render import Flat

CURVE_POINTS = 60
# A practice's view of its peers shows list-size bands holding at least this many peers each.
MIN_PEERS_PER_BAND = 3


# --- the viewer ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PracticeInfo:
    """What the views need of a practice (``can_read_practice`` reads ``ods`` and ``group``)."""

    ods: str
    name: str
    group: str
    list_size: int
    imd_decile: int
    visibility: str = "named"


@lru_cache(maxsize=500_000)
def _pseudonym(secret: bytes, viewer_id: int, ods: str, scope: str = "") -> str:
    # Without a scope the same value as aggregator.users.service.pseudonym_for (a test holds
    # them equal), with the one-shot C HMAC and a cache: a funnel pseudonymises thousands of
    # peers per request. A scope (a practice's peer-group views) gives other pseudonyms.
    msg = f"{viewer_id}\x00{ods}" + (f"\x00{scope}" if scope else "")
    mac = hmac.digest(secret, msg.encode(), "sha256")
    return "P-" + base64.b32encode(mac[:5]).decode("ascii")


_PRACTICES: dict[str, Any] = {"key": None, "value": {}}
_PRACTICES_LOCK = threading.Lock()


def _practices(session: Session) -> dict[str, PracticeInfo]:
    """Every practice, cached per process and reloaded when the table changes (a practice
    added, renamed or regrouped changes the count or the fingerprint of its columns)."""
    key = tuple(
        session.execute(
            select(
                func.count(),
                func.max(Practice.created_at),
                func.sum(
                    func.length(Practice.name)
                    + func.length(Practice.group)
                    + Practice.list_size
                    + Practice.imd_decile
                ),
                # a practice's visibility changes with a submission that sets a new
                # visibility_since (a fresh UUID)
                func.sum(func.length(Practice.visibility)),
                func.count(Practice.visibility_since),
                func.min(Practice.visibility_since),
                func.max(Practice.visibility_since),
            )
        ).one()
    )
    with _PRACTICES_LOCK:
        if _PRACTICES["key"] == key:
            return _PRACTICES["value"]  # type: ignore[no-any-return]
    rows = session.execute(
        select(
            Practice.ods,
            Practice.name,
            Practice.group,
            Practice.list_size,
            Practice.imd_decile,
            Practice.visibility,
        )  # fmt: skip
    ).all()
    value = {r[0]: PracticeInfo(*r) for r in rows}
    with _PRACTICES_LOCK:
        _PRACTICES.update(key=key, value=value)
    return value


_IDENTIFIED: dict[tuple[Any, ...], tuple[dict[str, PracticeInfo], frozenset[str]]] = {}


@dataclass
class Viewer:
    user: User
    secret: bytes
    practices: dict[str, PracticeInfo] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, user: User, secret: bytes) -> Viewer:
        return cls(user, secret, _practices(session))

    @property
    def own(self) -> str | None:
        return self.user.practice_ods if self.user.role in ("practice", "ig_officer") else None

    def identifies(self, ods: str) -> bool:
        return ods in self.identified

    @property
    def identified(self) -> frozenset[str]:
        """The practices this viewer may identify (can_read_practice over every practice),
        computed once per practice list and viewer: a funnel asks for each of thousands."""
        u = self.user
        key = (id(self.practices), u.id, u.role, u.group, u.practice_ods)
        hit = _IDENTIFIED.get(key)
        if hit is None or hit[0] is not self.practices:
            found = frozenset(ods for ods, p in self.practices.items() if can_read_practice(u, p))  # type: ignore[arg-type]
            if len(_IDENTIFIED) > 10_000:
                _IDENTIFIED.clear()
            hit = _IDENTIFIED[key] = (self.practices, found)
        return hit[1]

    def shows(self, ods: str) -> bool:
        """Whether practice ``ods`` is shown on its own (identified or pseudonymised) to this
        viewer: not when it chose totals_only, except in its own view."""
        p = self.practices.get(ods)
        return p is None or shows_individually(self.user, p)  # type: ignore[arg-type]

    def require(self, ods: str) -> PracticeInfo:
        p = self.practices.get(ods)
        if p is None or not can_read_practice(self.user, p):  # type: ignore[arg-type]
            # The same answer whether or not the practice exists: no probing for ODS codes.
            raise ForbiddenError(
                f"practice {ods}: not visible to a {self.user.role} user", code="practice-forbidden"
            )
        return p

    @property
    def coarse(self) -> bool:
        """Whether peers are shown coarsened: in a practice's own view (practice and IG users)."""
        return self.own is not None

    def pseudonym(self, ods: str, dimension: str = "network") -> str:
        """A peer's pseudonym; in a practice's view, one per peer-group dimension, so a peer
        seen in the PCN (or IMD, or size) funnel cannot be looked up in the network funnel."""
        scope = dimension if self.coarse and dimension != "network" else ""
        return _pseudonym(self.secret, self.user.id, ods, scope)

    def label(self, ods: str) -> dict[str, Any]:
        if self.identifies(ods):
            p = self.practices[ods]
            return {
                "id": ods,
                "name": p.name,
                "identified": True,
                "self": ods == self.own,
                "pcn": p.group,
            }
        alias = self.pseudonym(ods)
        return {"id": alias, "name": alias, "identified": False, "self": False, "pcn": None}

    def attributes(self) -> dict[str, stats.PracticeAttributes]:
        return {
            ods: stats.PracticeAttributes(ods, p.group, p.imd_decile, p.list_size)
            for ods, p in self.practices.items()
        }


# --- peer groups --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerGroup:
    dimension: stats.PeerDimension
    name: str
    members: frozenset[str] | None  # None: the whole network

    def as_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "name": self.name}


def _match_group(dimension: str, wanted: str, code: str) -> bool:
    if wanted == code:
        return True
    if dimension == "imd" and wanted.isdigit():
        return code.startswith(f"IMD quintile {wanted}")
    return False


def resolve_group(
    viewer: Viewer, peer: str | None, group: str | None, anchor: str | None = None
) -> PeerGroup:
    """The peer group a request names: ``peer`` is network|pcn|imd|size; ``group`` the group's
    name (for IMD also the quintile number); without it, the group of ``anchor`` (or of the
    viewer's own practice, or a network lead's PCN). Practice and IG users may ask only for
    groups their own practice belongs to."""
    dim = peer or "network"
    if dim not in stats.PEER_DIMENSIONS:
        raise BadRequestError(
            f"peer={dim!r}: use one of {', '.join(stats.PEER_DIMENSIONS)}", code="bad-peer"
        )
    if dim == "network":
        return PeerGroup("network", "network", None)
    attrs = viewer.attributes()
    own = viewer.own
    if group is None:
        base = anchor or own
        if base is None and dim == "pcn" and viewer.user.role == "network_lead":
            group = viewer.user.group
        elif base is not None and base in attrs:
            group = attrs[base].group(dim)
        if group is None:
            raise BadRequestError(f"peer={dim}: name the group with group=...", code="bad-peer")
    codes = {c for a in attrs.values() if (c := a.group(dim)) is not None}
    code = next((c for c in sorted(codes) if _match_group(dim, group, c)), None)
    if code is None:
        raise NotFoundError(
            f"peer={dim} group={group!r}: no such peer group", code="unknown-peer-group"
        )
    if own is not None and attrs.get(own) is not None and attrs[own].group(dim) != code:
        raise ForbiddenError(
            f"peer={dim} group={group!r}: a {viewer.user.role} user sees only its own peer groups",
            code="peer-forbidden",
        )
    members = frozenset(ods for ods, a in attrs.items() if a.group(dim) == code)
    return PeerGroup(dim, code, members)


def peer_group_options(viewer: Viewer) -> list[dict[str, str]]:
    """The groups a viewer may pick (for the dashboard's filter)."""
    attrs = viewer.attributes()
    own = viewer.own
    out = [{"peer": "network", "group": "network", "label": "Whole network"}]
    dims: tuple[tuple[stats.PeerDimension, str], ...] = (
        ("pcn", "PCN"),
        ("imd", "Deprivation"),
        ("size", "List size"),
    )
    for dim, title in dims:
        codes = sorted({c for a in attrs.values() if (c := a.group(dim)) is not None})
        if own is not None and own in attrs:
            codes = [c for c in codes if c == attrs[own].group(dim)]
        out += [{"peer": dim, "group": c, "label": f"{title}: {c}"} for c in codes]
    return out


# --- indicators and periods ------------------------------------------------------------------------


def indicator_titles(session: Session) -> dict[str, dict[str, Any]]:
    """Titles and versions from the latest published catalogue (empty when none)."""
    head = session.execute(
        select(CatalogueRow.id, CatalogueRow.version, CatalogueRow.sha256)
        .order_by(CatalogueRow.published_at.desc(), CatalogueRow.version.desc())
        .limit(1)
    ).first()
    if head is None:
        return {}
    return _titles(session, *head)


_TITLES: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}


def _titles(session: Session, cat_id: str, version: int, sha256: str) -> dict[str, dict[str, Any]]:
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
    out = {i.id: {"title": i.title, "version": i.version, "qof": i.qof} for i in cat.indicators}
    _TITLES[(cat_id, version, sha256)] = out
    return out


def _period(start: dt.date, end: dt.date) -> dict[str, str]:
    label = (
        end.isoformat()[:7]
        if start.day == 1 and (end + dt.timedelta(days=1)).day == 1
        else f"{start}/{end}"
    )
    return {"start": start.isoformat(), "end": end.isoformat(), "label": label}


def resolve(
    session: Session, period: str | None, indicator: str | None = None
) -> tuple[dt.date, dt.date]:
    try:
        found = service.resolve_period(session, period, indicator)
    except ValueError as exc:
        raise NotFoundError(str(exc), code="unknown-period") from None
    if found is None:
        what = f" for {indicator}" if indicator else ""
        raise NotFoundError(
            f"no benchmarks{what} yet: no submissions have been stored", code="no-benchmarks"
        )
    return found


def catalogue_listing(session: Session) -> dict[str, Any]:
    titles = indicator_titles(session)
    inds = service.indicators(session)
    return {
        "indicators": [
            {"id": i, **titles.get(i, {"title": i, "version": None, "qof": None})} for i in inds
        ],
        "periods": [_period(s, e) for s, e in service.periods(session)],
        "peer_dimensions": list(stats.PEER_DIMENSIONS),
    }


# --- counts as a viewer sees them --------------------------------------------------------------------


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def _limits(lim: stats.Limits | None) -> dict[str, float | None] | None:
    if lim is None:
        return None
    return {
        "low_95": _r(lim.low_95),
        "high_95": _r(lim.high_95),
        "low_998": _r(lim.low_998),
        "high_998": _r(lim.high_998),
    }


def _flat_from_row(r: Any) -> Flat:
    lims = (
        (r.limit_low_95, r.limit_high_95, r.limit_low_998, r.limit_high_998)
        if r.limit_low_95 is not None
        else None
    )
    return (r.practice_ods, r.numerator, r.numerator_status, r.denominator, r.denominator_status, r.status, r.rate,
            r.lo95, r.hi95, r.lo998, r.hi998, r.approximate, r.z, r.band, lims, r.note, r.submission_id,
            r.indicator_version)  # fmt: skip


def _flat_from_result(res: stats.PracticeResult, row: Any) -> Flat:
    lim = res.limits
    lims = (_r(lim.low_95), _r(lim.high_95), _r(lim.low_998), _r(lim.high_998)) if lim else None
    ci95, ci998 = res.ci95 or (None, None), res.ci998 or (None, None)
    return (res.practice, res.numerator, row.numerator_status, res.denominator, row.denominator_status, res.status,
            _r(res.rate), _r(ci95[0]), _r(ci95[1]), _r(ci998[0]), _r(ci998[1]), res.approximate, _r(res.z),
            res.band, lims, res.note, row.submission_id, row.indicator_version)  # fmt: skip


# --- where a practice's view places its peers -------------------------------------------------------


_BAND_LOWS = [lo for lo, _, _ in stats.SIZE_BANDS]


def _size_band_index(list_size: int) -> int:
    """The index of the size peer group's band a list size falls in (stats.SIZE_BANDS)."""
    return max(0, bisect.bisect_right(_BAND_LOWS, list_size) - 1)


def _band_label(first: int, last: int) -> str:
    lo, hi = stats.SIZE_BANDS[first][0], stats.SIZE_BANDS[last][1]
    if first == 0 and hi is None:
        return "any list size"
    if first == 0:
        return f"under {hi + 1:,}"  # type: ignore[operator]
    return f"{lo:,} and over" if hi is None else f"{lo:,}-{hi:,}"


def _two_figures(v: float) -> int:
    if v < 1:
        return 1
    step = 10 ** max(0, math.floor(math.log10(v)) - 1)
    return int(round(v / step) * step)


_BAND_INDEXES: list[Any] = [None]


def _band_indexes(practices: dict[str, PracticeInfo]) -> tuple[dict[str, int], dict[str, int]]:
    """Every practice's list size and size-band index, once per practice list (the cache is
    one tuple, replaced whole, so a concurrent reader never sees half of it)."""
    hit = _BAND_INDEXES[0]
    if hit is None or hit[0] is not practices:
        sizes = {ods: p.list_size for ods, p in practices.items()}
        hit = (practices, (sizes, {ods: _size_band_index(n) for ods, n in sizes.items()}))
        _BAND_INDEXES[0] = hit
    return hit[1]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a practice's view shows a peer: its list-size band and the x it is drawn at."""

    size_band: str
    x: int | None


def peer_places(viewer: Viewer, flats: list[Flat]) -> dict[str, Place]:
    """The list-size band and plotting position of every peer in ``flats``, as a practice's
    view shows them. Bands are the size peer groups', merged with a neighbour until each holds
    at least ``MIN_PEERS_PER_BAND`` of the view's peers (or one band holds them all). A band's
    peers share one x: the denominator a practice of the band's median published list size
    would have at the view's overall ratio of denominator to list size. Nothing in a place
    depends on one peer's counts, so no place tells two peers of a band apart."""
    sizes, index = _band_indexes(viewer.practices)
    identified = viewer.identified
    band_of = {f[0]: index[f[0]] for f in flats if f[0] not in identified and f[0] in index}
    counts = [0] * len(stats.SIZE_BANDS)
    for i in band_of.values():
        counts[i] += 1
    groups = [[i, i, c] for i, c in enumerate(counts) if c]
    while len(groups) > 1:
        j = min(range(len(groups)), key=lambda k: (groups[k][2], k))
        if groups[j][2] >= MIN_PEERS_PER_BAND:
            break
        if j == 0:
            k = 1
        elif j == len(groups) - 1:
            k = j - 1
        else:
            k = j - 1 if groups[j - 1][2] <= groups[j + 1][2] else j + 1
        a, b = min(j, k), max(j, k)
        groups[a : b + 1] = [[groups[a][0], groups[b][1], groups[a][2] + groups[b][2]]]
    den = listed = 0
    for f in flats:
        if f[6] is not None and f[3] and f[0] in sizes:
            den += f[3]
            listed += sizes[f[0]]
    ratio = den / listed if listed else None
    group_of = {i: g for g, (first, last, _) in enumerate(groups) for i in range(first, last + 1)}
    members: list[list[str]] = [[] for _ in groups]
    for ods, i in band_of.items():
        members[group_of[i]].append(ods)
    out: dict[str, Place] = {}
    for (first, last, _), group in zip(groups, members, strict=True):
        x = None
        if ratio is not None:
            x = _two_figures(ratio * float(np.median([sizes[o] for o in group])))
        out.update(dict.fromkeys(group, Place(_band_label(first, last), x)))
    return out


def _item(
    viewer: Viewer,
    f: Flat,
    detail: bool = False,
    place: Place | None = None,
    dimension: str = "network",
) -> dict[str, Any]:
    """A practice's entry as ``viewer`` may see it (``place``: a peer's, in a practice's view)."""
    ods = f[0]
    if viewer.identifies(ods):
        out: dict[str, Any] = {
            "id": ods,
            "name": viewer.practices[ods].name,
            "identified": True,
            "self": ods == viewer.own,
        }
        out |= render.identified_fields(f)
        if detail:
            out["submission_id"], out["indicator_version"] = f[16], f[17]
            lims = f[14]
            out["limits"] = (
                dict(zip(("low_95", "high_95", "low_998", "high_998"), lims, strict=True))
                if lims
                else None
            )
        return out
    alias = viewer.pseudonym(ods, dimension)
    out = {"id": alias, "name": alias, "identified": False, "self": False}
    if viewer.coarse:
        place = place or Place("any list size", None)
        return out | render.coarse_peer_fields(f) | {"size_band": place.size_band, "x": place.x}
    out |= render.peer_fields(f)
    if detail and out["rate"] is not None:
        lims = f[14]
        out["limits"] = (
            dict(zip(("low_95", "high_95", "low_998", "high_998"), lims, strict=True))
            if lims
            else None
        )
    return out


def _summary_dict(
    s: stats.Summary, version: int | None = None, versions: str = ""
) -> dict[str, Any]:
    d = s.dispersion
    return {
        "practices": s.practices,
        "included": s.included,
        "suppressed": s.suppressed,
        "empty": s.empty,
        "rounded": s.rounded,
        "numerator": s.numerator,
        "denominator": s.denominator,
        "pooled": _r(s.pooled),
        "pooled_ci95": [_r(s.pooled_ci95[0]), _r(s.pooled_ci95[1])] if s.pooled_ci95 else None,
        "median": _r(s.median),
        "iqr": [_r(s.q1), _r(s.q3)] if s.q1 is not None else None,
        "deciles": [_r(v) for v in s.deciles] if s.deciles else None,
        "dispersion": {
            "phi": _r(d.phi),
            "statistic": _r(d.statistic),
            "p_value": _r(d.p_value, 8),
            "overdispersed": d.overdispersed,
            "tau2": _r(d.tau2, 8),
        },
        "method": s.method,
        "abc": _r(s.abc),
        "abc_practices": s.abc_practices,
        "indicator_version": version,
        "versions": [int(v) for v in versions.split(",") if v],
        "note": (
            f"{s.rounded} practice(s) sent rounded counts: their rates and intervals are approximate"
            if s.rounded
            else None
        ),
    }


def _summary_from_row(row: BenchSummary) -> stats.Summary:
    disp = stats.Dispersion(
        row.included,
        row.phi,
        row.dispersion_statistic,
        row.dispersion_p,
        row.overdispersed,
        row.tau2,
    )
    return stats.Summary(
        practices=row.practices, included=row.included, suppressed=row.suppressed, empty=row.empty,
        rounded=row.rounded, numerator=row.numerator, denominator=row.denominator, pooled=row.pooled,
        pooled_ci95=(row.pooled_lo95, row.pooled_hi95) if row.pooled_lo95 is not None else None,  # type: ignore[arg-type]
        median=row.median, q1=row.q1, q3=row.q3,
        deciles=tuple(json.loads(row.deciles)) if row.deciles else None,
        dispersion=disp, method=row.method, abc=row.abc, abc_practices=row.abc_practices,  # type: ignore[arg-type]
    )  # fmt: skip


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


METHODS = ("exact", "normal", "wilson", "multiplicative", "additive", "auto")


def funnel_data(session: Session, viewer: Viewer, indicator: str, period: str | None, peer: str | None = None,
                group: str | None = None, anchor: str | None = None, method: str | None = None) -> FunnelData:  # fmt: skip
    if method is not None and method not in METHODS:
        raise BadRequestError(f"method={method!r}: use {', '.join(METHODS)}", code="bad-method")
    start, end = resolve(session, period, indicator)
    summ = service.summary_row(session, indicator, start, end)
    if summ is None:
        raise NotFoundError(f"{indicator}: no benchmark for period {end}", code="no-benchmarks")
    pg = resolve_group(viewer, peer, group, anchor)
    rows = service.practice_rows(session, indicator, start, end)
    if pg.members is None and method in (None, "auto", summ.method):
        summary = _summary_from_row(summ)
        flats = [_flat_from_row(r) for r in rows]
    else:
        # A peer group (or another method): recompute from the stored counts of this one
        # (indicator, period) only.
        keep = {
            r.practice_ods: r for r in rows if pg.members is None or r.practice_ods in pg.members
        }
        f = stats.funnel([service.counts_of(r) for r in keep.values()], method=method or "auto")  # type: ignore[arg-type]
        summary = f.summary
        flats = [_flat_from_result(res, keep[res.practice]) for res in f.practices]
    return FunnelData(
        indicator, start, end, pg, summary, flats, summ.indicator_version, summ.versions
    )


def limit_curve(summary: stats.Summary, max_n: int) -> list[dict[str, Any]]:
    if summary.pooled is None or max_n <= 0:
        return []
    ns = np.unique(np.geomspace(1, max(2, int(max_n * 1.15)), CURVE_POINTS).astype(int))
    return [
        {"denominator": int(n), **(_limits(lim) or {})}
        for n, lim in zip(ns, stats.limits_for(summary, ns, summary.method), strict=True)
    ]


def funnel_view(session: Session, viewer: Viewer, indicator: str, period: str | None = None, peer: str | None = None,
                group: str | None = None, method: str | None = None, detail: bool = False) -> dict[str, Any]:  # fmt: skip
    """One indicator's funnel for one period and peer group. ``detail`` adds each practice's
    limits, submission id and indicator version (the CSV export uses it)."""
    fd = funnel_data(session, viewer, indicator, period, peer, group, method=method)
    # a practice that chose totals_only is in the totals (fd's summary), never a point of its own
    flats = [f for f in fd.flats if viewer.shows(f[0])]
    places = peer_places(viewer, flats) if viewer.coarse else {}
    dim = fd.group.dimension
    practices = [_item(viewer, f, detail, places.get(f[0]), dim) for f in flats]
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
        max_n = max((f[3] for f in flats if f[6] is not None and f[3]), default=0)
    return _funnel_head(session, fd, max_n) | {"practices": practices}


#: What the dashboard says where a catalogue indicator has no stored value for a period.
NO_DATA = "no practice has sent {indicator} for {period}"


def _known_indicator(session: Session, indicator: str) -> dict[str, Any]:
    """The indicator's entry in the latest published catalogue, or a bare one for an indicator
    stored under an earlier catalogue; 404 for any other."""
    known = indicator_titles(session).get(indicator)
    if known is not None:
        return known
    if indicator in service.indicators(session):
        return {"title": indicator, "version": None}
    raise NotFoundError(
        f"indicator {indicator}: not in the network's catalogue", code="unknown-indicator"
    )


def empty_funnel_view(session: Session, viewer: Viewer, indicator: str, period: str | None = None,
                      peer: str | None = None, group: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``funnel_view``'s shape for a catalogue indicator that no practice sent for a period the
    network has (the dashboard shows this rather than an error): no practices, no limits."""
    known = _known_indicator(session, indicator)
    start, end = resolve(session, period)
    summary = stats.Summary(
        practices=0, included=0, suppressed=0, empty=0, rounded=0, numerator=0, denominator=0,
        pooled=None, pooled_ci95=None, median=None, q1=None, q3=None, deciles=None,
        dispersion=stats.Dispersion(0, None, None, None, False, 0.0), method="exact", abc=None,
        abc_practices=0,
    )  # fmt: skip
    version = known.get("version")
    fd = FunnelData(indicator, start, end, resolve_group(viewer, peer, group), summary, [],
                    version, str(version or ""))  # fmt: skip
    head = _funnel_head(session, fd, 0)
    return head | {"practices": [], "no_data": NO_DATA.format(indicator=indicator, period=head["period"]["label"])}  # fmt: skip


def empty_trend_view(session: Session, viewer: Viewer, indicator: str, practice: str | None = None,
                     peer: str | None = None, group: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``trend_view``'s shape for a catalogue indicator no practice has sent yet."""
    known = _known_indicator(session, indicator)
    if practice is not None:
        viewer.require(practice)
    out: dict[str, Any] = {
        "indicator": indicator,
        "title": known.get("title", indicator),
        "peer_group": resolve_group(viewer, peer, group, practice).as_dict(),
        "network": [],
        "network_changes": [],
        "breaks": [],
        "note": f"no practice has sent {indicator} yet",
    }
    if practice is not None:
        out |= {"practice": viewer.label(practice), "practice_series": [], "practice_changes": []}
    return out


def _funnel_head(session: Session, fd: FunnelData, max_n: int) -> dict[str, Any]:
    return {
        "indicator": fd.indicator,
        "title": indicator_titles(session).get(fd.indicator, {}).get("title", fd.indicator),
        "period": _period(fd.start, fd.end),
        "peer_group": fd.group.as_dict(),
        "summary": _summary_dict(fd.summary, fd.version, fd.versions),
        "limits_curve": limit_curve(fd.summary, max_n),
    }


def funnel_json(session: Session, viewer: Viewer, indicator: str, period: str | None = None, peer: str | None = None,
                group: str | None = None, method: str | None = None) -> str:  # fmt: skip
    """``funnel_view`` as JSON text. For the whole network at the stored method, each practice's
    entry is spliced from the JSON the refresh stored (render.py), so a national funnel costs a
    narrow read and string joins; anything else goes through ``funnel_view``."""
    if method is not None and method not in METHODS:
        raise BadRequestError(f"method={method!r}: use {', '.join(METHODS)}", code="bad-method")
    start, end = resolve(session, period, indicator)
    summ = service.summary_row(session, indicator, start, end)
    if summ is None:
        raise NotFoundError(f"{indicator}: no benchmark for period {end}", code="no-benchmarks")
    pg = resolve_group(viewer, peer, group)
    if pg.members is not None or method not in (None, "auto", summ.method):
        return json.dumps(
            funnel_view(session, viewer, indicator, period, peer, group, method),
            separators=(",", ":"),
        )
    if viewer.coarse:
        return _coarse_funnel_json(session, viewer, start, end, pg, summ)
    t = table_of(BenchPractice)
    rows = session.execute(
        select(t.c.practice_ods, t.c.item_json, t.c.peer_json, t.c.denominator, t.c.rate).where(
            t.c.indicator == indicator, t.c.period_start == start, t.c.period_end == end
        )
    ).all()
    own, names = viewer.own, viewer.practices
    ident: list[tuple[str, str]] = []
    peers: list[tuple[str, str]] = []
    max_n = 0
    for ods, item_json, peer_json, den, rate in rows:
        if not viewer.shows(ods):
            continue  # totals_only
        if rate is not None and den and den > max_n:
            max_n = den
        if viewer.identifies(ods):
            head = (
                f'{{"id":{json.dumps(ods)},"name":{json.dumps(names[ods].name)},"identified":true,'
            )
            ident.append((ods, f'{head}"self":{"true" if ods == own else "false"},{item_json}}}'))
        else:
            alias = viewer.pseudonym(ods)
            peers.append(
                (
                    alias,
                    f'{{"id":"{alias}","name":"{alias}","identified":false,"self":false,{peer_json}}}',
                )
            )
    ident.sort()
    peers.sort()
    fd = FunnelData(
        indicator,
        start,
        end,
        pg,
        _summary_from_row(summ),
        [],
        summ.indicator_version,
        summ.versions,
    )
    head = json.dumps(_funnel_head(session, fd, max_n) | {"practices": []}, separators=(",", ":"))
    assert head.endswith('"practices":[]}')
    return head[:-3] + "[" + ",".join(x for _, x in ident + peers) + "]}"


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
    t = table_of(BenchPractice)
    rows = session.execute(
        select(t.c.practice_ods, t.c.item_json, t.c.numerator, t.c.numerator_status, t.c.denominator,
               t.c.denominator_status, t.c.status, t.c.rate, t.c.approximate, t.c.band, t.c.note)
        .where(t.c.indicator == summ.indicator, t.c.period_start == start, t.c.period_end == end)
    ).all()  # fmt: skip
    rows = [r for r in rows if viewer.shows(r[0])]  # not a practice that chose totals_only
    flats: list[Flat] = [
        (r[0], r[2], r[3], r[4], r[5], r[6], r[7], None, None, None, None, r[8], None, r[9], None,
         r[10], None, None)
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
            ident.append((ods, f'{{"id":{json.dumps(ods)},"name":{name},"identified":true,"self":{own},{r[1]}}}'))  # fmt: skip
            continue
        place = places.get(ods) or Place("any list size", None)
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
    fd = FunnelData(summ.indicator, start, end, pg, _summary_from_row(summ), [],
                    summ.indicator_version, summ.versions)  # fmt: skip
    head = json.dumps(_funnel_head(session, fd, max_n) | {"practices": []}, separators=(",", ":"))
    assert head.endswith('"practices":[]}')
    return head[:-3] + "[" + ",".join(x for _, x in ident + peers) + "]}"


# --- one practice across indicators -------------------------------------------------------------------


def practice_view(
    session: Session, viewer: Viewer, ods: str, period: str | None = None, history: bool = True
) -> dict[str, Any]:
    """Every indicator for one practice at a period (default: latest), with its trend across
    every stored period. Each carries its clinical area, whether it is a register, and the
    patients who could gain (gain.py); the indicators come most patients who could gain
    first, then the registers (areas.py), which are never set against the benchmark."""
    p = viewer.require(ods)
    start, end = resolve(session, period)
    titles = indicator_titles(session)
    rows = service.practice_history(session, ods)
    summ = {(s.indicator, s.period_end): s for s in service.summaries(session)}
    by_ind: dict[str, list[BenchPractice]] = {}
    for r in rows:
        by_ind.setdefault(r.indicator, []).append(r)
    items = []
    for ind, hist in sorted(by_ind.items()):
        cur = next((r for r in hist if r.period_end == end), None)
        s = summ.get((ind, end))
        register = areas.is_register(ind)
        item: dict[str, Any] = {
            "indicator": ind,
            "title": titles.get(ind, {}).get("title", ind),
            "area": areas.area_of(ind),
            "register": register,
            "pooled": _r(s.pooled) if s else None,
            "abc": _r(s.abc) if s and not register else None,
            "median": _r(s.median) if s else None,
            "method": s.method if s else None,
        }
        if cur is not None:
            item.update(_item(viewer, _flat_from_row(cur), detail=True))
            item["gap_to_abc"] = (
                _r(s.abc - cur.rate)
                if s and s.abc is not None and cur.rate is not None and not register
                else None
            )
            item["could_gain"] = (
                None
                if register or s is None
                else gain.patients_could_gain(cur.numerator, cur.denominator, s.abc)
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
                    r.period_end.isoformat(), r.indicator_version or 0, service.counts_of(r)
                )
                for r in hist
            ]
            item["trend"] = [
                {"period": _period(r.period_start, r.period_end), "rate": _r(r.rate), "status": r.status, "band": r.band,
                 "indicator_version": r.indicator_version,
                 "network": _r(summ[(ind, r.period_end)].pooled) if (ind, r.period_end) in summ else None}
                for r in hist
            ]  # fmt: skip
            item["changes"] = [_change(c) for c in stats.changes(pts)]
        items.append(item)
    items.sort(key=_gain_order)
    return {"practice": viewer.label(ods) | {"pcn": p.group, "list_size": p.list_size, "imd_decile": p.imd_decile},
            "period": _period(start, end), "indicators": items}  # fmt: skip


def _gain_order(item: dict[str, Any]) -> tuple[Any, ...]:
    """Registers last; before them, most patients who could gain first, then the widest gap
    below the benchmark (an unknown figure after every known one), then the id."""
    gain_, gap = item.get("could_gain"), item.get("gap_to_abc")
    return (
        item["register"],
        -(gain_ if gain_ is not None else -1),
        -(gap if gap is not None else -math.inf),
        item["indicator"],
    )


def _change(c: stats.Change) -> dict[str, Any]:
    return {
        "from": c.period_from,
        "to": c.period_to,
        "rate_from": _r(c.rate_from),
        "rate_to": _r(c.rate_to),
        "difference": _r(c.difference),
        "z": _r(c.z, 4),
        "p_value": _r(c.p_value, 8),
        "beyond_chance": c.beyond_chance,
        "version_break": c.version_break,
        "status": c.status,
        "note": c.note,
    }


# --- trends -------------------------------------------------------------------------------------------


def trend_view(session: Session, viewer: Viewer, indicator: str, practice: str | None = None, peer: str | None = None,
               group: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The network's (or a peer group's) pooled rate per period, and one practice's, with
    period-to-period changes tested and version breaks marked."""
    if practice is not None:
        viewer.require(practice)
    pg = resolve_group(viewer, peer, group, practice)
    summ = service.summaries(session, indicator)
    if not summ:
        raise NotFoundError(f"{indicator}: no benchmarks yet", code="no-benchmarks")
    versions = {s.period_end: s.indicator_version or 0 for s in summ}
    if pg.members is None:
        net = [
            (
                s.period_start,
                s.period_end,
                stats.Counts(
                    "network",
                    s.numerator,
                    s.denominator,
                    "rounded" if s.rounded else "exact",
                    "rounded" if s.rounded else "exact",
                ),
            )
            for s in summ
        ]
    else:
        rows = session.scalars(
            select(BenchPractice).where(
                BenchPractice.indicator == indicator, BenchPractice.practice_ods.in_(pg.members)
            )
        ).all()
        per: dict[tuple[dt.date, dt.date], list[stats.Counts]] = {}
        for r in rows:
            per.setdefault((r.period_start, r.period_end), []).append(service.counts_of(r))
        net = [
            (s, e, stats.pool(c, pg.name))
            for (s, e), c in sorted(per.items(), key=lambda kv: kv[0][1])
        ]
    abc = {s.period_end: s.abc for s in summ}
    network_series = [
        {"period": _period(s, e), "numerator": c.numerator, "denominator": c.denominator, "rate": _r(c.rate),
         "status": c.status, "abc": _r(abc.get(e)), "indicator_version": versions.get(e)}
        for s, e, c in net
    ]  # fmt: skip
    net_changes = stats.changes(
        [stats.TrendPoint(e.isoformat(), versions.get(e, 0), c) for _, e, c in net]
    )
    out: dict[str, Any] = {
        "indicator": indicator,
        "title": indicator_titles(session).get(indicator, {}).get("title", indicator),
        "peer_group": pg.as_dict(),
        "network": network_series,
        "network_changes": [_change(c) for c in net_changes],
        "breaks": [
            _period(s.period_start, s.period_end)
            for a, s in zip(summ, summ[1:], strict=False)
            if (a.indicator_version or 0) != (s.indicator_version or 0)
        ],
        "note": "changes are pooled two-proportion z-tests at 5%; a change of indicator version breaks the series",
    }
    if practice is not None:
        hist = service.practice_history(session, practice, indicator)
        pts = [
            stats.TrendPoint(
                r.period_end.isoformat(), r.indicator_version or 0, service.counts_of(r)
            )
            for r in hist
        ]
        out["practice"] = viewer.label(practice)
        out["practice_series"] = [
            {"period": _period(r.period_start, r.period_end), "numerator": r.numerator, "denominator": r.denominator,
             "rate": _r(r.rate), "status": r.status, "band": r.band, "ci95": [_r(r.lo95), _r(r.hi95)] if r.lo95 is not None else None,
             "indicator_version": r.indicator_version}
            for r in hist
        ]  # fmt: skip
        out["practice_changes"] = [_change(c) for c in stats.changes(pts)]
    return out


# --- overview: practices x indicators -------------------------------------------------------------------


def overview_view(session: Session, viewer: Viewer, period: str | None = None, peer: str | None = None,
                  group: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Each identified practice's funnel band on every indicator at one period (a network
    lead's grid; a practice user gets its own row), with the indicators also grouped by
    clinical area (``areas``: areas.py)."""
    start, end = resolve(session, period)
    pg = resolve_group(viewer, peer, group)
    titles = indicator_titles(session)
    inds = [s.indicator for s in service.summaries(session, period_end=end)]
    cols = []
    grid: dict[str, dict[str, Any]] = {}
    for ind in inds:
        fd = funnel_data(
            session,
            viewer,
            ind,
            end.isoformat(),
            pg.dimension,
            pg.name if pg.members is not None else None,
        )
        cols.append(
            {
                "indicator": ind,
                "title": titles.get(ind, {}).get("title", ind),
                "area": areas.area_of(ind),
                "register": areas.is_register(ind),
                "pooled": _r(fd.summary.pooled),
                "abc": _r(fd.summary.abc),
                "method": fd.summary.method,
            }
        )
        for f in fd.flats:
            if not viewer.identifies(f[0]):
                continue
            it = _item(viewer, f)
            grid.setdefault(f[0], {})[ind] = {
                k: it[k] for k in ("rate", "band", "band_text", "status", "note", "approximate")
            }
    rows = [{**viewer.label(ods), "cells": grid[ods]} for ods in sorted(grid)]
    return {
        "period": _period(start, end),
        "peer_group": pg.as_dict(),
        "indicators": cols,
        "areas": areas.group_by_area(cols),
        "practices": rows,
    }


# --- FHIR MeasureReport ----------------------------------------------------------------------------------

POP_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
DISCLOSURE_EXT = "urn:fedqi:fhir:disclosure-status"


def _population(code: str, value: int | None, status: str) -> dict[str, Any]:
    pop: dict[str, Any] = {"code": {"coding": [{"system": POP_SYSTEM, "code": code}]}}
    if value is None:
        pop["extension"] = [{"url": DATA_ABSENT, "valueCode": "masked"}]
    else:
        pop["count"] = int(value)
        if status == "rounded":
            pop["extension"] = [{"url": DISCLOSURE_EXT, "valueCode": "rounded"}]
    return pop


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _populations(
    num: int | None, ns: str, den: int | None, ds: str, exc: int | None, es: str
) -> list[dict[str, Any]]:
    # FHIR counts the denominator before exclusions; the catalogue's denominator is after them.
    fhir_den = _add(den, exc)
    ds_all = "suppressed" if fhir_den is None else ("rounded" if "rounded" in (ds, es) else "exact")
    return [
        _population("initial-population", fhir_den, ds_all),
        _population("denominator", fhir_den, ds_all),
        _population("denominator-exclusion", exc, es),
        _population("numerator", num, ns),
    ]


def _score(num: int | None, den: int | None) -> dict[str, Any] | None:
    if num is None or den is None or den == 0:
        return None
    return {"value": round(min(num / den, 1.0), 6)}


def _fhir_datetime(value: dt.datetime) -> str:
    # SQLite hands back naive datetimes; they were written in UTC. FHIR needs the offset.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def measure_report(
    session: Session, viewer: Viewer, ods: str, indicator: str, period: str | None = None
) -> dict[str, Any]:
    """A FHIR R4 MeasureReport (type summary) of one practice's indicator for one period: the
    populations of its whole-practice cell and one stratifier by age band and sex."""
    p = viewer.require(ods)
    start, end = resolve(session, period, indicator)
    row = session.get(BenchPractice, (indicator, start, end, ods))
    if row is None:
        raise NotFoundError(
            f"{ods} sent no {indicator} cell for period ending {end}", code="no-cell"
        )
    # An unverified row (its stored cells are not the signed ones) shows no stratum either.
    stored = (
        None
        if row.status == service.UNVERIFIED
        else session.get(Cell, (row.submission_id, indicator))
    )
    strata = sorted(
        (c for c in (stored_cells(stored) if stored is not None else []) if not c.is_total),
        key=lambda c: (c.age_band, c.sex),
    )
    group: dict[str, Any] = {
        "code": {"coding": [{"system": "urn:fedqi:indicator", "code": indicator}]},
        "population": _populations(row.numerator, row.numerator_status, row.denominator, row.denominator_status, row.exclusions, row.exclusions_status),
    }  # fmt: skip
    score = _score(row.numerator, row.denominator)
    if score:
        group["measureScore"] = score
    if strata:
        group["stratifier"] = [
            {
                "code": [{"text": "age band"}, {"text": "sex"}],
                "stratum": [
                    {
                        "component": [
                            {"code": {"text": "age band"}, "value": {"text": c.age_band}},
                            {
                                "code": {"text": "sex"},
                                "value": {
                                    "coding": [
                                        {
                                            "system": "http://hl7.org/fhir/administrative-gender",
                                            "code": {
                                                "F": "female",
                                                "M": "male",
                                                "U": "unknown",
                                            }.get(c.sex, "unknown"),
                                        }
                                    ],
                                    "text": c.sex,
                                },
                            },
                        ],
                        "population": _populations(
                            c.numerator,
                            c.numerator_status,
                            c.denominator,
                            c.denominator_status,
                            c.exclusions,
                            c.exclusions_status,
                        ),
                        **(
                            {"measureScore": s} if (s := _score(c.numerator, c.denominator)) else {}
                        ),
                    }  # fmt: skip
                    for c in strata
                ],
            }
        ]
    summ = service.summary_row(session, indicator, start, end)
    version = row.indicator_version
    return {
        "resourceType": "MeasureReport",
        "id": f"{ods}-{indicator}-{end.isoformat()}".lower().replace("_", "-"),
        "status": "complete",
        "type": "summary",
        "measure": f"urn:fedqi:measure:{indicator}" + (f"|{version}" if version else ""),
        "date": _fhir_datetime(summ.computed_at if summ else dt.datetime.now(dt.UTC)),
        "reporter": {"identifier": {"system": ODS_SYSTEM, "value": ods}, "display": p.name},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "improvementNotation": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
                    "code": "increase",
                }
            ]
        },
        "group": [group],
    }


# --- CSV rows ---------------------------------------------------------------------------------------------


def funnel_csv_rows(view: dict[str, Any]) -> Iterable[dict[str, Any]]:
    s = view["summary"]
    for p in view["practices"]:
        lim = p.get("limits") or {}
        yield {
            "indicator": view["indicator"], "period_end": view["period"]["end"],
            "peer_group": f"{view['peer_group']['dimension']}:{view['peer_group']['name']}",
            "practice": p["id"], "name": p["name"], "identified": p["identified"],
            "numerator": p.get("numerator"), "numerator_status": p.get("numerator_status"),
            "denominator": p.get("denominator"), "denominator_status": p.get("denominator_status"),
            "size_band": p.get("size_band"), "status": p.get("status"), "rate": p.get("rate"),
            "ci95_low": (p.get("ci95") or [None, None])[0], "ci95_high": (p.get("ci95") or [None, None])[1],
            "ci998_low": (p.get("ci998") or [None, None])[0], "ci998_high": (p.get("ci998") or [None, None])[1],
            "approximate": p.get("approximate"), "z": p.get("z"), "band": p.get("band"),
            "limit_low_95": lim.get("low_95"), "limit_high_95": lim.get("high_95"),
            "limit_low_998": lim.get("low_998"), "limit_high_998": lim.get("high_998"),
            "method": s["method"], "pooled": s["pooled"], "abc": s["abc"], "note": p.get("note"),
        }  # fmt: skip


def practice_csv_rows(view: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for i in view["indicators"]:
        yield {
            "practice": view["practice"]["id"], "period_end": view["period"]["end"], "indicator": i["indicator"],
            "title": i["title"], "numerator": i.get("numerator"), "numerator_status": i.get("numerator_status"),
            "denominator": i.get("denominator"), "denominator_status": i.get("denominator_status"),
            "status": i.get("status"), "rate": i.get("rate"),
            "ci95_low": (i.get("ci95") or [None, None])[0], "ci95_high": (i.get("ci95") or [None, None])[1],
            "band": i.get("band"), "pooled": i.get("pooled"), "abc": i.get("abc"), "gap_to_abc": i.get("gap_to_abc"),
            "could_gain": i.get("could_gain"), "register": i.get("register"), "area": i.get("area"),
            "note": i.get("note"),
        }  # fmt: skip


def trend_csv_rows(view: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for n in view["network"]:
        yield {"series": f"{view['peer_group']['dimension']}:{view['peer_group']['name']}", "period_end": n["period"]["end"],
               "numerator": n["numerator"], "denominator": n["denominator"], "rate": n["rate"], "status": n["status"],
               "indicator_version": n["indicator_version"]}  # fmt: skip
    for p in view.get("practice_series", []):
        yield {"series": view["practice"]["id"], "period_end": p["period"]["end"], "numerator": p["numerator"],
               "denominator": p["denominator"], "rate": p["rate"], "status": p["status"],
               "indicator_version": p["indicator_version"]}  # fmt: skip


def overview_csv_rows(view: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for p in view["practices"]:
        for ind in view["indicators"]:
            c = p["cells"].get(ind["indicator"], {})
            yield {"practice": p["id"], "name": p["name"], "area": ind["area"], "indicator": ind["indicator"],
                   "title": ind["title"], "period_end": view["period"]["end"],
                   "rate": c.get("rate"), "band": c.get("band"), "status": c.get("status")}  # fmt: skip
