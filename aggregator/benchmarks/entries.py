"""One practice's benchmark as a viewer may see it: exact for a practice the viewer may
identify; for a peer, under a pseudonym with its counts re-published under the network's
stratified rule (1-7 withheld, the rest rounded to 5) so exact small numbers never reach a peer;
in a practice's own view, a peer shows no counts at all, its rate to whole percentage points and
only a list-size band (:mod:`.peers`). The fields are render.py's, which the refresh also stores
as JSON for the fast path (:func:`.funnel.funnel_json`)."""

from __future__ import annotations

from typing import Any

from . import areas, render, stats
from .figures import rounded
from .peers import NOWHERE, Place
from .render import Flat
from .viewer import Viewer

#: A practice's entry in a view. Its keys depend on who is looking (identified, peer, or a
#: practice's coarse view of a peer; ``detail`` adds limits and provenance): render.py's fields.
Entry = dict[str, Any]

LIMIT_KEYS = ("low_95", "high_95", "low_998", "high_998")


def flat_from_row(r: Any) -> Flat:
    """A stored ``BenchPractice`` row (or a row of its columns) as a :data:`Flat`."""
    lims = (
        (r.limit_low_95, r.limit_high_95, r.limit_low_998, r.limit_high_998)
        if r.limit_low_95 is not None
        else None
    )
    return (r.practice_ods, r.numerator, r.numerator_status, r.denominator, r.denominator_status, r.status, r.rate,
            r.lo95, r.hi95, r.lo998, r.hi998, r.approximate, r.z, r.band, lims, r.note, r.submission_id,
            r.indicator_version)  # fmt: skip


def flat_from_result(res: stats.PracticeResult, row: Any) -> Flat:
    """A freshly computed result (a peer group's funnel) as a :data:`Flat`, with the statuses
    and provenance of its stored ``row``."""
    lim = res.limits
    lims = (
        (rounded(lim.low_95), rounded(lim.high_95), rounded(lim.low_998), rounded(lim.high_998))
        if lim
        else None
    )
    ci95, ci998 = res.ci95 or (None, None), res.ci998 or (None, None)
    return (res.practice, res.numerator, row.numerator_status, res.denominator, row.denominator_status, res.status,
            rounded(res.rate), rounded(ci95[0]), rounded(ci95[1]), rounded(ci998[0]), rounded(ci998[1]),
            res.approximate, rounded(res.z), res.band, lims, res.note, row.submission_id,
            row.indicator_version)  # fmt: skip


def entry(
    viewer: Viewer,
    f: Flat,
    detail: bool = False,
    place: Place | None = None,
    dimension: str = "network",
) -> Entry:
    """A practice's entry as ``viewer`` may see it (``place``: a peer's, in a practice's view)."""
    ods = f[0]
    if viewer.identifies(ods):
        out: Entry = {
            "id": ods,
            "name": viewer.practices[ods].name,
            "identified": True,
            "self": ods == viewer.own,
        }
        out |= render.identified_fields(f)
        if viewer.coarse:
            # measured from the exact pooled rate, which a practice's view does not show
            out.update(dict.fromkeys(render.OWN_COARSE_HIDDEN))
        if detail:
            out["submission_id"], out["indicator_version"] = f[16], f[17]
            lims = f[14]
            out["limits"] = (
                dict(zip(LIMIT_KEYS, lims, strict=True)) if lims and not viewer.coarse else None
            )
        return out
    alias = viewer.pseudonym(ods, dimension)
    out = {"id": alias, "name": alias, "identified": False, "self": False}
    if viewer.coarse:
        place = place or NOWHERE
        return out | render.coarse_peer_fields(f) | {"size_band": place.size_band, "x": place.x}
    out |= render.peer_fields(f)
    if detail:
        # the limits at a peer's exact denominator would give that denominator back
        out["limits"] = None
    return out


#: A practice's band where the pool it would be judged against is withheld (figures.few_peers):
#: with no pooled rate there are no limits shown, so no verdict against them either.
UNJUDGED = "not judged: the pooled rate and its limits are withheld"


def unjudged(e: Entry) -> Entry:
    """``e`` without its funnel band (``band``, ``band_text``), where the pooled rate and the
    limits it was judged against are withheld from the viewer: a band of "within the 95%
    limits" beside limits that are not shown (a new-user run) is a verdict nobody can check.
    A practice with a rate says why it has no band."""
    out = e | {"band": None, "band_text": None}
    if e.get("rate") is not None:
        out["note"] = UNJUDGED
    return out


#: An entry's figures (render.py's fields, and ``limits`` with detail): none is shown for a
#: period out of season (areas.in_season).
FIGURES = ("numerator", "numerator_status", "denominator", "denominator_status", "rate", "ci95",
           "ci998", "z", "band", "band_text", "limits")  # fmt: skip


def out_of_season(e: Entry) -> Entry:
    """``e`` with no figure, for a seasonal indicator's period out of season: its rate then
    falls towards 0% every year whatever the practice does, and "0.0%, within the limits" read
    as a real 0% (a new user's report). It says so instead (areas.OUT_OF_SEASON)."""
    return (
        e
        | dict.fromkeys(FIGURES)
        | {
            "status": "out_of_season",
            "note": areas.OUT_OF_SEASON,
            "approximate": False,
        }
    )
