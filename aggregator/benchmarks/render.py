"""How one practice's benchmark is shown: to a viewer who may identify it, to a peer, and to a
practice (or its IG officer) looking at a peer.

Used by the views (per request) and by the refresh, which stores the first two forms as JSON
text so a national funnel (thousands of practices) is assembled by string joins instead of
rebuilt field by field on every read. Both paths go through these functions, so they agree.
The third form, :func:`coarse_peer_fields`, holds no count at all (docs/disclosure.md,
"Pseudonyms"); it is cheap and cached by value, so it is built at read time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from protocol.catalogue import CountRule
from protocol.disclosure import round_half_up

from .stats import BAND_TEXT

# Peers never see exact small numbers: their counts are re-published under the network's
# stratified rule (1-7 withheld, the rest rounded to 5).
PEER_RULE = CountRule(suppress_at_or_below=7, round_to=5)
#: The note of a practice whose counts :data:`PEER_RULE` withholds, in the view of anyone who
#: may not identify it: a network lead outside its PCN as well as a peer practice, so it says
#: what is withheld, not from whom ("not shown to peers" read oddly to a lead, who is no peer).
SMALL_NUMBERS = f"small numbers (a count from 1 to {PEER_RULE.suppress_at_or_below}): withheld"

# A practice's view of a peer shows its rate to whole percentage points: with more digits a rate
# is a fraction whose smallest denominator is often the peer's exact count.
COARSE_RATE_DIGITS = 2

# A practice's stored benchmark, flat: (ods, num, num_status, den, den_status, status, rate,
# lo95, hi95, lo998, hi998, approximate, z, band, limits | None, note, submission_id, version).
Flat = tuple[Any, ...]


def publish(value: int | None, status: str) -> tuple[int | None, str]:
    """Re-publish a peer's count under ``PEER_RULE``."""
    if status == "suppressed" or value is None:
        return None, "suppressed"
    if value == 0:
        return 0, "zero"
    if value <= PEER_RULE.suppress_at_or_below:
        return None, "suppressed"
    return round_half_up(value, PEER_RULE.round_to), "rounded"


def _rate_fields(f: Flat) -> dict[str, Any]:
    rate, lo95, hi95, lo998, hi998, approx, z, band, note = (
        f[6],
        f[7],
        f[8],
        f[9],
        f[10],
        f[11],
        f[12],
        f[13],
        f[15],
    )
    return {
        "rate": rate,
        "ci95": [lo95, hi95] if lo95 is not None else None,
        "ci998": [lo998, hi998] if lo998 is not None else None,
        "approximate": approx,
        "z": z,
        "band": band,
        "band_text": BAND_TEXT.get(band) if band else None,
        "note": note,
    }


def identified_fields(f: Flat) -> dict[str, Any]:
    """What a viewer who may identify the practice sees (besides its id and name)."""
    return {
        "numerator": f[1],
        "numerator_status": f[2],
        "denominator": f[3],
        "denominator_status": f[4],
        "status": f[5],
        **_rate_fields(f),
    }


def peer_fields(f: Flat) -> dict[str, Any]:
    """What a viewer who may not identify the practice sees of it (besides its pseudonym) in
    the network's own views (a network lead's view of practices outside its PCN): counts
    re-published under :data:`PEER_RULE`, the rate and intervals to whole points, the band, no
    z; a practice whose counts that withholds is shown as withheld, with no rate to
    back-calculate them from."""
    num, ns = publish(f[1], f[2])
    den, ds = publish(f[3], f[4])
    out: dict[str, Any] = {
        "numerator": num,
        "numerator_status": ns,
        "denominator": den,
        "denominator_status": ds,
        "status": f[5] if f[5] in ("suppressed", "unverified") else "rounded",
    }
    if f[6] is not None and "suppressed" in (ns, ds):
        out.update(status="suppressed", rate=None, ci95=None, ci998=None, approximate=True, z=None, band=None,
                   band_text=None, note=SMALL_NUMBERS)  # fmt: skip
        return out
    # The rate and its intervals to whole points and no z: to six decimals (and the z, measured
    # from the exact pooled rate) they gave back the exact counts that rounding to 5 hides
    # (a review found 411 of 415 peers' exact counts in a network lead's view). Written out
    # field by field: the refresh renders one for each of a national group's 6,500 practices.
    rate, lo95, lo998, band = f[6], f[7], f[9], f[13]
    d = COARSE_RATE_DIGITS
    out["rate"] = None if rate is None else round(rate, d)
    out["ci95"] = None if lo95 is None else [round(lo95, d), round(f[8], d)]
    out["ci998"] = None if lo998 is None else [round(lo998, d), round(f[10], d)]
    out["approximate"] = True
    out["z"] = None
    out["band"] = band
    out["band_text"] = BAND_TEXT.get(band) if band else None
    out["note"] = f[15]
    return out


# A refresh renders two of these per practice, 13,000 per national group: orjson encodes one in
# about a seventh of the standard library's time (docs/benchmarks.md). Its output is compact
# JSON like ``json.dumps(..., separators=(",", ":"))``'s, except that text is UTF-8 rather than
# \u-escaped and exponents are short (``1e-6``, not ``1e-06``): the same values once parsed.
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def as_json(fields: dict[str, Any]) -> str:
    """The fields as the body of a JSON object, without its braces (for splicing)."""
    return orjson.dumps(fields, option=_OPTIONS)[1:-1].decode()


#: What a practice's own view leaves out of its own entry: its z-score, and (with ``detail``)
#: its limits, are measured from the exact pooled rate, which that view does not show
#: (figures.pooled_as_shown); its own counts, rate, intervals and band stay.
OWN_COARSE_HIDDEN = ("z",)


def own_coarse_json(item_json: str) -> str:
    """A stored identified entry's JSON body (without braces) as a practice's own view shows
    its own practice: :data:`OWN_COARSE_HIDDEN` set to null."""
    fields = orjson.loads("{" + item_json + "}")
    fields.update(dict.fromkeys(OWN_COARSE_HIDDEN))
    return as_json(fields)


def coarse_peer_fields(f: Flat) -> dict[str, Any]:
    """What a practice (or its IG officer) sees of a peer, besides its pseudonym and its size
    band: the rate to whole percentage points and the funnel band; no numerator, no
    denominator, no interval, no z and no limits (each of those gives back the denominator). A
    peer whose counts the peer rule withholds is withheld here too."""
    return dict(_coarse(f[1], f[2], f[3], f[4], f[5], f[6], f[11], f[13], f[15]))


def coarse_peer_json(f: Flat) -> tuple[str, bool]:
    """:func:`coarse_peer_fields` as a JSON object body without braces (for splicing), and
    whether it shows a rate (whether the peer is drawn)."""
    return _coarse_json(f[1], f[2], f[3], f[4], f[5], f[6], f[11], f[13], f[15])


@lru_cache(maxsize=65_536)
def _coarse_json(*args: Any) -> tuple[str, bool]:
    fields = dict(_coarse(*args))
    return as_json(fields), fields["rate"] is not None


@lru_cache(maxsize=65_536)
def _coarse(num: int | None, ns: str, den: int | None, ds: str, status: str, rate: float | None,
            approx: bool, band: str | None, note: str | None) -> tuple[tuple[str, Any], ...]:  # fmt: skip
    withheld = "suppressed" in (publish(num, ns)[1], publish(den, ds)[1])
    out: dict[str, Any] = {
        "numerator": None,
        "numerator_status": "withheld",
        "denominator": None,
        "denominator_status": "banded",
        "status": status
        if status == "unverified"
        else ("suppressed" if status == "suppressed" or withheld else "rounded"),
        "rate": None,
        "ci95": None,
        "ci998": None,
        "approximate": True,
        "z": None,
        "band": None,
        "band_text": None,
        "note": SMALL_NUMBERS if withheld and status not in ("suppressed", "unverified") else note,
    }
    if rate is not None and not withheld:
        out.update(rate=round(float(rate), COARSE_RATE_DIGITS), approximate=bool(approx), band=band,
                   band_text=BAND_TEXT.get(band) if band else None)  # fmt: skip
    return tuple(out.items())
