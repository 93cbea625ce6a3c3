"""The statistics' results as the views publish them: rounded, with ``None`` for what is not a
number, as plain dicts (summaries, limits and period-to-period changes)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import TypedDict

from . import areas, stats
from .models import BenchSummary


def rounded(x: float | None, nd: int = 6) -> float | None:
    """``x`` to ``nd`` decimal places; ``None`` for no value or NaN."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


#: Decimal places of a practice-rate statistic in a practice's own view (render.py's
#: COARSE_RATE_DIGITS: whole percentage points, as it shows a peer's rate).
COARSE_DIGITS = 2


def among_practices(x: float | None, coarse: bool) -> float | None:
    """A statistic of the practices' rates (the median, quartiles, deciles and the achievable
    benchmark) as a viewer sees it. Each is one practice's rate, or two practices' rates
    interpolated (the achievable benchmark of one practice is that practice's rate), and at six
    decimals a rate's smallest fraction is often the practice's exact numerator and
    denominator. So a practice's own view (``coarse``), which shows peers' rates to whole
    percentage points, shows these to whole points too; the network's own view keeps six
    decimals."""
    return rounded(x, COARSE_DIGITS if coarse else 6)


def pooled_as_shown(x: float | None, coarse: bool) -> float | None:
    """A rate pooled from the practices (the network's or a peer group's rate, its interval, a
    change between two of them) as a viewer sees it. Pooled counts less the viewer's own are
    the other practices' sum, and with their rates and list sizes, or a second pool a month
    later, that sum gives back each one's counts, small ones included. So a practice's own view
    (``coarse``) shows pooled rates to whole percentage points and no pooled counts; the
    network's own view keeps six decimals."""
    return rounded(x, COARSE_DIGITS if coarse else 6)


def shown_status(status: str, coarse: bool) -> str:
    """A pooled rate's status as a viewer sees it: ``rounded`` where the view gets the rate to
    whole points (``coarse``: :func:`pool_coarse`), as a peer's rate to whole points is, so a
    trend's ``status`` column never says ``exact`` beside a rate of 0.15 that is not."""
    return "rounded" if coarse and status == "exact" else status


#: Decimal places of the overdispersion factor phi in a practice's own view: with the pooled
#: counts, phi to six decimals (a sum of one term per practice) pinned each peer's numerator.
COARSE_PHI_DIGITS = 1


def coarse_summary(s: stats.Summary) -> stats.Summary:
    """``s`` with only what a coarsened view shows of it (:func:`pooled_as_shown`, phi to one
    decimal, tau-squared to one significant figure, which additive limits then show), for
    drawing that view's limits: the limits then carry nothing more."""
    d = s.dispersion
    return dataclasses.replace(
        s,
        pooled=pooled_as_shown(s.pooled, True),
        dispersion=dataclasses.replace(
            d,
            phi=rounded(d.phi, COARSE_PHI_DIGITS),
            tau2=float(f"{d.tau2:.1g}") if d.tau2 is not None else None,
        ),
    )


#: What a view shows in place of figures pooled from too few practices the viewer cannot
#: identify (a practice's peers; in a network lead's view, the practices outside its PCN): said
#: to whichever role is reading.
SMALL_POOL = (
    "pooled from fewer than {n} practices not named to you: not shown, as it would give those "
    "practices' counts"
)


def few_peers(unknown: int, minimum: int) -> bool:
    """Whether a pool rests on 1 to ``minimum`` - 1 practices the viewer cannot identify
    (``unknown``: a practice's peers; in a network lead's view, the practices outside its PCN):
    its pooled figures, less those of the practices the viewer knows, would be one such
    practice's counts, or the sum of two. A pool of practices the viewer identifies alone (an
    admin's, a lead's own PCN, a practice's own) is not affected."""
    return 0 < unknown < minimum


def pool_coarse(coarse: bool, unknown: int) -> bool:
    """Whether a viewer sees a pool coarsened (:func:`pooled_as_shown`, :func:`among_practices`,
    no pooled counts): in a practice's own view (``coarse``), and in any view of a pool holding
    practices the viewer cannot identify (``unknown`` > 0: a network lead's view of the network,
    or of another PCN), where exact pooled counts, differenced across groups or months, give
    those practices' counts back. An admin's view, and a lead's of its own PCN, are exact."""
    return coarse or unknown > 0


class Limits(TypedDict):
    low_95: float | None
    high_95: float | None
    low_998: float | None
    high_998: float | None


def limits_dict(lim: stats.Limits | None) -> Limits | None:
    if lim is None:
        return None
    return {
        "low_95": rounded(lim.low_95),
        "high_95": rounded(lim.high_95),
        "low_998": rounded(lim.low_998),
        "high_998": rounded(lim.high_998),
    }


# "from" is a keyword: the functional form.
Change = TypedDict(
    "Change",
    {
        "from": str,
        "to": str,
        "rate_from": float | None,
        "rate_to": float | None,
        "difference": float | None,
        "z": float | None,
        "p_value": float | None,
        "beyond_chance": bool,
        "tested": bool,  # whether the two-proportion test could be run (p_value may be hidden)
        "version_break": bool,
        "status": str,
        "note": str | None,
    },
)


def change_dict(c: stats.Change, *, pooled_coarse: bool = False) -> Change:
    """A change as published; ``pooled_coarse``: a change of pooled rates in a view that gets
    them to whole points (:func:`pool_coarse`: a practice's own view, a network lead's of a
    pool holding practices it cannot identify), with no z or p-value, which the exact pooled
    counts give. There the difference is the shown rate now less the shown rate then, so the
    row agrees with itself: the exact difference rounded on its own read '15% → 16%, +0 pts'
    (an exact 0.4 points between 15.4% and 15.8%). Whether it is beyond chance is still tested
    on the exact counts, and the status says ``rounded``, as a peer's rate to whole points does."""
    if not pooled_coarse:
        return {
            "from": c.period_from,
            "to": c.period_to,
            "rate_from": rounded(c.rate_from),
            "rate_to": rounded(c.rate_to),
            "difference": rounded(c.difference),
            "z": rounded(c.z, 4),
            "p_value": rounded(c.p_value, 8),
            "beyond_chance": c.beyond_chance,
            "tested": c.p_value is not None,
            "version_break": c.version_break,
            "status": c.status,
            "note": c.note,
        }
    rate_from = pooled_as_shown(c.rate_from, True)
    rate_to = pooled_as_shown(c.rate_to, True)
    shown = None if rate_from is None or rate_to is None else rounded(rate_to - rate_from, 2)
    return {
        "from": c.period_from,
        "to": c.period_to,
        "rate_from": rate_from,
        "rate_to": rate_to,
        "difference": None if c.difference is None else shown,
        "z": None,
        "p_value": None,
        "beyond_chance": c.beyond_chance,
        "tested": c.p_value is not None,
        "version_break": c.version_break,
        "status": shown_status(c.status, True),
        "note": c.note,
    }


class Dispersion(TypedDict):
    phi: float | None
    statistic: float | None
    p_value: float | None
    overdispersed: bool
    tau2: float | None


class Summary(TypedDict):
    """A funnel's summary: counts of practices, pooled rate, spread, dispersion, method, ABC."""

    practices: int
    included: int
    suppressed: int
    empty: int
    rounded: int
    numerator: int | None
    denominator: int | None
    pooled: float | None
    pooled_ci95: list[float | None] | None
    median: float | None
    iqr: list[float | None] | None
    deciles: list[float | None] | None
    dispersion: Dispersion
    method: str
    abc: float | None
    abc_practices: int
    indicator_version: int | None
    versions: list[int]
    note: str | None
    withheld: str | None  # why the pooled figures are not shown (:func:`withhold_pool`)
    #: whether the pooled rate, its interval, the quantiles and the ABC are to whole
    #: percentage points (:func:`pool_coarse`): every output of them says so
    whole_points: bool


def summary_dict(
    s: stats.Summary,
    version: int | None = None,
    versions: str = "",
    *,
    coarse: bool = False,
    register: bool = False,
) -> Summary:
    """The summary as the views publish it; ``coarse``: as a practice's own view shows it
    (:func:`among_practices`); ``register``: the summary of a register (areas.is_register),
    which is never set against a benchmark, so its ABC is null and taken from no practice."""
    d = s.dispersion
    return {
        "practices": s.practices,
        "included": s.included,
        "suppressed": s.suppressed,
        "empty": s.empty,
        "rounded": s.rounded,
        # A practice's own view: no pooled counts, pooled rates to whole points
        # (:func:`pooled_as_shown`), phi to one decimal and no dispersion statistic, p-value or
        # tau-squared (each a sum over the practices' exact counts).
        "numerator": None if coarse else s.numerator,
        "denominator": None if coarse else s.denominator,
        "pooled": pooled_as_shown(s.pooled, coarse),
        "pooled_ci95": (
            [pooled_as_shown(s.pooled_ci95[0], coarse), pooled_as_shown(s.pooled_ci95[1], coarse)]
            if s.pooled_ci95
            else None
        ),
        "median": among_practices(s.median, coarse),
        "iqr": [among_practices(s.q1, coarse), among_practices(s.q3, coarse)]
        if s.q1 is not None
        else None,
        "deciles": [among_practices(v, coarse) for v in s.deciles] if s.deciles else None,
        "dispersion": {
            "phi": rounded(d.phi, COARSE_PHI_DIGITS if coarse else 6),
            "statistic": None if coarse else rounded(d.statistic),
            "p_value": None if coarse else rounded(d.p_value, 8),
            "overdispersed": d.overdispersed,
            "tau2": None if coarse else rounded(d.tau2, 8),
        },
        "method": s.method,
        "abc": None if register else among_practices(s.abc, coarse),
        "abc_practices": 0 if register else s.abc_practices,
        "indicator_version": version,
        "versions": [int(v) for v in versions.split(",") if v],
        "note": (
            f"{s.rounded} practice(s) sent rounded counts: their rates and intervals are approximate"
            if s.rounded
            else None
        ),
        "withheld": None,
        "whole_points": coarse,
    }


def withhold_pool(d: Summary, minimum: int) -> Summary:
    """``d`` with every figure pooled from the practices (counts, rate, interval, quantiles,
    benchmark, dispersion) withheld (:func:`few_peers`); the practice counts stay."""
    return _no_pool(d) | {"withheld": SMALL_POOL.format(n=minimum)}


def out_of_season_pool(d: Summary) -> Summary:
    """``d`` for a seasonal indicator's period out of season (areas.in_season): no pooled
    figure, as no practice's rate is a measure then; how many practices sent it stays."""
    return _no_pool(d) | {"abc_practices": 0, "note": None}


def _no_pool(d: Summary) -> Summary:
    return d | {
        "numerator": None,
        "denominator": None,
        "pooled": None,
        "pooled_ci95": None,
        "median": None,
        "iqr": None,
        "deciles": None,
        "abc": None,
        "dispersion": {
            "phi": None,
            "statistic": None,
            "p_value": None,
            "overdispersed": False,
            "tau2": None,
        },
    }


def in_season_counts(indicator: str, end: dt.date, counts: stats.Counts) -> stats.Counts:
    """``counts`` as a trend tests them: none for a period out of season (areas.in_season),
    so no change to or from it is tested; :func:`season_changes` then says why."""
    if areas.in_season(indicator, end):
        return counts
    return stats.Counts(counts.practice, None, None, "suppressed", "suppressed")


def season_changes(indicator: str, changes: list[Change]) -> list[Change]:
    """``changes`` (of ``indicator``, periods as ISO end dates), each from or to a period out
    of season (areas.in_season) marked so: no rate and no difference there, not a change."""
    for c in changes:
        if not all(
            areas.in_season(indicator, dt.date.fromisoformat(p)) for p in (c["from"], c["to"])
        ):
            c["status"], c["note"] = "out_of_season", areas.OUT_OF_SEASON
    return changes


def summary_from_row(row: BenchSummary) -> stats.Summary:
    """The stored summary of a refresh as the statistics' own type."""
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
