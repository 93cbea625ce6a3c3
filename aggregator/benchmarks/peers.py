"""Peer groups, and where a practice's view places its peers.

A request names a peer group by dimension (network, PCN, IMD quintile, list-size band) and
name; :func:`resolve_group` checks the viewer may ask for it. A practice's own view
(:attr:`Viewer.coarse`) shows a peer only a list-size band, merged with its neighbours until
each holds at least the network's ``min_peers_per_band`` peers of the view, drawn at one
position shared by the band (:func:`peer_places`; docs/disclosure.md, "Pseudonyms"). The bands
are the network's settings (``size_band_edges``, ``min_peers_per_band``), carried by the viewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

from ..errors import BadRequestError, ForbiddenError, NotFoundError
from . import stats
from .render import Flat
from .viewer import PracticeInfo, Viewer

#: A role as a sentence names it ("an IG officer", not "a ig_officer").
ROLE_NAMES = {"practice": "a practice user", "ig_officer": "an IG officer"}


class PeerGroupRef(TypedDict):
    """How a view names the peer group it shows."""

    dimension: stats.PeerDimension
    name: str


class PeerGroupOption(TypedDict):
    """One choice of the dashboard's peer-group filter."""

    peer: str
    group: str
    label: str


@dataclass(frozen=True)
class PeerGroup:
    dimension: stats.PeerDimension
    name: str
    members: frozenset[str] | None  # None: the whole network

    def as_dict(self) -> PeerGroupRef:
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
        if group not in (None, "network"):
            # group= without its dimension names no peer group: refuse it, never ignore it
            raise BadRequestError(
                f"group={group!r}: name its peers too (peer={'|'.join(stats.PEER_DIMENSIONS[1:])}"
                f" in the API, pg=<peers>|{group} in the dashboard)",
                code="bad-peer",
            )
        return PeerGroup("network", "network", None)
    groups = {ods: viewer.group_of(a, dim) for ods, a in viewer.attributes().items()}
    own = viewer.own
    if group is None:
        base = anchor or own
        if base is None and dim == "pcn" and viewer.user.role == "network_lead":
            group = viewer.user.group
        elif base is not None and base in groups:
            group = groups[base]
        if group is None:
            raise BadRequestError(
                f"{dim} peers: name the group (group=... in the API, pg={dim}|<group> in the "
                "dashboard)",
                code="bad-peer",
            )
    codes = {c for c in groups.values() if c is not None}
    code = next((c for c in sorted(codes) if _match_group(dim, group, c)), None)
    if code is None:
        raise NotFoundError(
            f"the {dim} peer group {group!r}: no such peer group", code="unknown-peer-group"
        )
    if own is not None and own in groups and groups[own] != code:
        raise ForbiddenError(
            f"the {dim} peer group {group!r}: {ROLE_NAMES.get(viewer.user.role, 'you')} sees "
            "only their own practice's peer groups",
            code="peer-forbidden",
        )
    members = frozenset(ods for ods, c in groups.items() if c == code)
    return PeerGroup(dim, code, members)


def peer_group_options(viewer: Viewer) -> list[PeerGroupOption]:
    """The groups a viewer may pick (for the dashboard's filter)."""
    attrs = viewer.attributes()
    own = viewer.own
    out: list[PeerGroupOption] = [{"peer": "network", "group": "network", "label": "Whole network"}]
    dims: tuple[tuple[stats.PeerDimension, str], ...] = (
        ("pcn", "PCN"),
        ("imd", "Deprivation"),
        ("size", "List size"),
    )
    for dim, title in dims:
        codes = sorted({c for a in attrs.values() if (c := viewer.group_of(a, dim)) is not None})
        if own is not None and own in attrs:
            codes = [c for c in codes if c == viewer.group_of(attrs[own], dim)]
        out += [{"peer": dim, "group": c, "label": f"{title}: {c}"} for c in codes]
    return out


# --- where a practice's view places its peers -------------------------------------------------------


def _two_figures(v: float) -> int:
    if v < 1:
        return 1
    step = 10 ** max(0, math.floor(math.log10(v)) - 1)
    return int(round(v / step) * step)


_BAND_INDEXES: list[Any] = [None]


def _band_indexes(
    practices: dict[str, PracticeInfo], bands: stats.PeerBands
) -> tuple[dict[str, int], dict[str, int]]:
    """Every practice's list size and size-band index, once per practice list and bands (the
    cache is one tuple, replaced whole, so a concurrent reader never sees half of it)."""
    hit = _BAND_INDEXES[0]
    if hit is None or hit[0] is not practices or hit[1] != bands:
        sizes = {ods: p.list_size for ods, p in practices.items()}
        hit = (practices, bands, (sizes, {ods: bands.index(n) for ods, n in sizes.items()}))
        _BAND_INDEXES[0] = hit
    return hit[2]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a practice's view shows a peer: its list-size band and the x it is drawn at."""

    size_band: str
    x: int | None


#: Where a peer is shown when no band is known for it.
NOWHERE = Place("any list size", None)


def peer_places(viewer: Viewer, flats: list[Flat]) -> dict[str, Place]:
    """The list-size band and plotting position of every peer in ``flats``, as a practice's
    view shows them. Bands are the size peer groups', merged with a neighbour until each holds
    at least ``viewer.bands.min_peers`` of the view's peers (or one band holds them all). A
    band's peers share one x: the denominator a practice of the band's median published list
    size would have at the view's overall ratio of denominator to list size. Nothing in a place
    depends on one peer's counts, so no place tells two peers of a band apart."""
    bands = viewer.bands
    sizes, index = _band_indexes(viewer.practices, bands)
    identified = viewer.identified
    band_of = {f[0]: index[f[0]] for f in flats if f[0] not in identified and f[0] in index}
    counts = [0] * bands.count
    for i in band_of.values():
        counts[i] += 1
    groups = [[i, i, c] for i, c in enumerate(counts) if c]
    while len(groups) > 1:
        j = min(range(len(groups)), key=lambda k: (groups[k][2], k))
        if groups[j][2] >= bands.min_peers:
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
        out.update(dict.fromkeys(group, Place(bands.label(first, last), x)))
    return out
