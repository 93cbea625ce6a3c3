"""Peer-benchmark statistics for proportions: pure functions, no I/O.

Every method and its source is written up in docs/benchmarks-statistics.md. In brief:

* practice rates with Wilson score intervals (Wilson 1927; the Fingertips ``phe_proportion``);
* the pooled network rate ``p0 = sum(x) / sum(n)`` with median, IQR and deciles of practice rates;
* funnel limits at 95% and 99.8% around ``p0``: exact binomial with interpolation (Spiegelhalter
  2005, Stat Med 24:1185), the normal approximation, and the Wilson-based limits of the
  Fingertips / PHEindicatormethods ``sigma_adjustment``;
* overdispersion (Spiegelhalter 2005, QSHC 14:347): arcsine-scale z-scores, 10% winsorisation,
  ``phi``, the test ``I*phi ~ chi2(I-1)``, multiplicative and additive (DerSimonian-Laird) limits;
* the Achievable Benchmark of Care (Kiefe et al. 2001, JAMA 285:2871; Weissman et al. 1999);
* period-to-period change with a two-proportion z-test; indicator version changes break trends.

Suppressed cells are carried through as suppressed: they take no part in pooled rates, limits,
quantiles or the ABC, and nothing is imputed for them. Each rate carries a disclosure status
(``exact``, ``rounded`` or ``suppressed``); intervals built on rounded counts say so.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats as sps

from ..settings import check_size_band_edges

RateStatus = Literal["exact", "rounded", "suppressed"]
CountStatus = Literal["exact", "rounded", "suppressed", "zero"]
Band = Literal["high_998", "high_95", "within", "low_95", "low_998"]
LimitMethod = Literal["exact", "normal", "wilson", "multiplicative", "additive"]

LEVELS = (0.95, 0.998)
BAND_TEXT: dict[str, str] = {
    "high_998": "above the 99.8% limit",
    "high_95": "above the 95% limit",
    "within": "within the 95% limits",
    "low_95": "below the 95% limit",
    "low_998": "below the 99.8% limit",
}
WINSORISE = 0.10
DISPERSION_ALPHA = 0.05
ABC_SHARE = 0.10


@lru_cache(maxsize=32)
def z_for(level: float) -> float:
    """Two-sided normal quantile for a central ``level`` (0.95 -> 1.95996, 0.998 -> 3.09023)."""
    return float(sps.norm.ppf(1 - (1 - level) / 2))


# --- one practice's rate --------------------------------------------------------------------


def _usable(status: RateStatus, denominator: int | None) -> bool:
    """:attr:`Counts.usable` for a practice whose status is already known."""
    return status != "suppressed" and (denominator or 0) > 0


@dataclass(frozen=True, slots=True)
class Counts:
    """A practice's released counts for one indicator and period (whole-practice total)."""

    practice: str
    numerator: int | None
    denominator: int | None
    numerator_status: CountStatus = "exact"
    denominator_status: CountStatus = "exact"

    @property
    def status(self) -> RateStatus:
        statuses = (self.numerator_status, self.denominator_status)
        if "suppressed" in statuses or self.numerator is None or self.denominator is None:
            return "suppressed"
        return "rounded" if "rounded" in statuses else "exact"

    @property
    def usable(self) -> bool:
        """Counts that can enter pooled rates: released (not suppressed) with a denominator."""
        return _usable(self.status, self.denominator)

    @property
    def capped_numerator(self) -> int:
        """The numerator for sums and tests: rounding each count separately can put it above
        its denominator, so it is capped there (docs/benchmarks-statistics.md)."""
        return min(self.numerator or 0, self.denominator or 0)

    @property
    def rate(self) -> float | None:
        if not self.usable:
            return None
        assert self.numerator is not None and self.denominator is not None
        # Rounding each count separately can put the numerator above the denominator.
        return min(self.numerator / self.denominator, 1.0)


def wilson_interval(x: float, n: float, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for ``x`` successes of ``n``; None when ``n`` is 0."""
    if n <= 0:
        return None
    x = min(max(x, 0.0), n)
    z = z_for(level)
    z2 = z * z
    centre = 2 * x + z2
    half = z * math.sqrt(z2 + 4 * x * (1 - x / n))
    denom = 2 * (n + z2)
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


def wilson_arrays(
    x: np.ndarray, n: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``wilson_interval`` over arrays (every ``n`` > 0)."""
    x = np.clip(np.asarray(x, float), 0.0, np.asarray(n, float))
    n = np.asarray(n, float)
    z = z_for(level)
    z2 = z * z
    centre = 2 * x + z2
    half = z * np.sqrt(z2 + 4 * x * (1 - x / n))
    denom = 2 * (n + z2)
    return np.maximum(0.0, (centre - half) / denom), np.minimum(1.0, (centre + half) / denom)


# --- funnel limits ----------------------------------------------------------------------------


def exact_limit(p0: float, n: int, prob: float) -> float:
    """The ``prob`` quantile of ``Bin(n, p0) / n`` with Spiegelhalter's (2005) interpolation:
    ``r`` the smallest count with ``F(r) >= prob``, ``alpha = (F(r) - prob) / (F(r) - F(r-1))``,
    limit ``(r - alpha) / n``. Degenerate ``p0`` (0 or 1) gives ``p0``."""
    if n <= 0:
        raise ValueError("exact_limit needs a positive denominator")
    if p0 <= 0.0 or p0 >= 1.0:
        return float(min(max(p0, 0.0), 1.0))
    dist = sps.binom(n, p0)
    r = float(dist.ppf(prob))
    f_r = float(dist.cdf(r))
    f_prev = float(dist.cdf(r - 1)) if r >= 1 else 0.0
    alpha = (f_r - prob) / (f_r - f_prev) if f_r > f_prev else 0.0
    return float(min(max((r - alpha) / n, 0.0), 1.0))


def exact_limits(p0: float, n: np.ndarray, prob: float) -> np.ndarray:
    """Vectorised ``exact_limit`` over an array of denominators (all > 0)."""
    n = np.asarray(n, dtype=np.int64)
    if p0 <= 0.0 or p0 >= 1.0:
        return np.full(n.shape, min(max(p0, 0.0), 1.0))
    return _exact_limits_many(p0, n, prob)  # type: ignore[arg-type]


def normal_limits(p0: float, n: np.ndarray, z: float) -> np.ndarray:
    """``p0 + z * sqrt(p0 (1 - p0) / n)`` clipped to [0, 1] (z negative for lower limits)."""
    n = np.asarray(n, dtype=float)
    return np.clip(p0 + z * np.sqrt(p0 * (1 - p0) / n), 0.0, 1.0)


def wilson_limits(
    p0: float, n: np.ndarray, prob: float, side: Literal["low", "high"]
) -> np.ndarray:
    """Fingertips' Wilson-score funnel limits (PHEindicatormethods ``sigma_adjustment``): the
    rate at which a practice's Wilson interval would just reach ``p0``."""
    n = np.asarray(n, dtype=float)
    z2 = float(sps.norm.ppf(prob)) ** 2
    a = p0 * (n / z2 + 1)
    inner = (-8 * p0 * (n / z2 + 1)) ** 2 - 64 * (1 / z2 + 1 / n) * p0 * (
        n * (p0 * (n / z2 + 2) - 1) + z2 * (p0 - 1)
    )
    b = np.sqrt(np.maximum(inner, 0.0))
    c = 1 / z2 + 1 / n
    value = (a - b / 8) / c / n if side == "low" else (a + b / 8) / c / n
    clipped: np.ndarray = np.clip(value, 0.0, 1.0)
    return clipped


# --- overdispersion -----------------------------------------------------------------------------


def arcsine_z(x: np.ndarray, n: np.ndarray, p0: float) -> np.ndarray:
    """z-scores on the variance-stabilising arcsine scale: ``(asin(sqrt(p)) - asin(sqrt(p0)))
    / (1 / (2 sqrt(n)))``."""
    p = np.clip(np.asarray(x, float) / np.asarray(n, float), 0.0, 1.0)
    z: np.ndarray = (
        (np.arcsin(np.sqrt(p)) - math.asin(math.sqrt(p0))) * 2 * np.sqrt(np.asarray(n, float))
    )
    return z


def winsorise(z: np.ndarray, share: float = WINSORISE) -> np.ndarray:
    """Pull z-scores beyond the ``share`` and ``1 - share`` quantiles in to those quantiles."""
    if z.size == 0:
        return z
    lo, hi = np.quantile(z, [share, 1 - share])
    clipped: np.ndarray = np.clip(z, lo, hi)
    return clipped


@dataclass(frozen=True, slots=True)
class Dispersion:
    """Spiegelhalter's overdispersion estimate and test for one funnel."""

    practices: int
    phi: float | None  # mean of the squared winsorised z-scores
    statistic: float | None  # I * phi, ~ chi2(I - 1) with no overdispersion
    p_value: float | None
    overdispersed: bool
    tau2: float  # DerSimonian-Laird between-practice variance on the arcsine scale

    @property
    def applied(self) -> str:
        return "additive" if self.overdispersed else "none"


def dispersion(
    x: np.ndarray,
    n: np.ndarray,
    p0: float,
    alpha: float = DISPERSION_ALPHA,
    share: float = WINSORISE,
) -> Dispersion:
    """Estimate ``phi`` from 10% winsorised arcsine z-scores, test ``I*phi`` against
    ``chi2(I-1)`` and give the DerSimonian-Laird ``tau^2`` (0 when ``I*phi <= I-1``)."""
    i = int(np.asarray(n).size)
    if i < 2 or p0 <= 0.0 or p0 >= 1.0:
        return Dispersion(i, None, None, None, False, 0.0)
    z = winsorise(arcsine_z(x, n, p0), share)
    phi = float(np.mean(z**2))
    statistic = i * phi
    p_value = float(sps.chi2.sf(statistic, i - 1))
    w = 4.0 * np.asarray(n, float)  # 1 / s_i^2 with s_i = 1 / (2 sqrt(n_i))
    spread = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (statistic - (i - 1)) / spread) if spread > 0 else 0.0
    return Dispersion(i, phi, statistic, p_value, p_value < alpha, tau2)


def _back(theta: np.ndarray) -> np.ndarray:
    p: np.ndarray = np.sin(np.clip(theta, 0.0, math.pi / 2)) ** 2
    return p


def multiplicative_limits(p0: float, n: np.ndarray, z: float, phi: float) -> np.ndarray:
    """``sin^2(theta0 + z sqrt(phi) s_i)``: limits widened by ``sqrt(phi)``."""
    s = 1 / (2 * np.sqrt(np.asarray(n, float)))
    return _back(math.asin(math.sqrt(p0)) + z * math.sqrt(phi) * s)


def additive_limits(p0: float, n: np.ndarray, z: float, tau2: float) -> np.ndarray:
    """``sin^2(theta0 + z sqrt(s_i^2 + tau^2))``: random-effects limits."""
    s2 = 1 / (4 * np.asarray(n, float))
    return _back(math.asin(math.sqrt(p0)) + z * np.sqrt(s2 + tau2))


# --- the funnel ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Lower and upper limits at 95% and 99.8% for one denominator."""

    low_95: float
    high_95: float
    low_998: float
    high_998: float


@dataclass(frozen=True, slots=True)
class PracticeResult:
    practice: str
    numerator: int | None
    denominator: int | None
    status: RateStatus
    rate: float | None
    ci95: tuple[float, float] | None
    ci998: tuple[float, float] | None
    approximate: bool  # intervals built on rounded counts
    z: float | None  # arcsine-scale z against p0 (adjusted when overdispersion is applied)
    band: Band | None
    limits: Limits | None  # the limits the band was judged against, at this denominator
    note: str | None = None  # why there is no rate ("suppressed", "no eligible patients")


@dataclass(frozen=True, slots=True)
class Summary:
    practices: int  # all practices with a cell
    included: int  # practices in pooled rates and limits
    suppressed: int
    empty: int  # denominator 0
    rounded: int  # included practices whose counts were rounded
    numerator: int
    denominator: int
    pooled: float | None
    pooled_ci95: tuple[float, float] | None
    median: float | None
    q1: float | None
    q3: float | None
    deciles: tuple[float, ...] | None  # 10th .. 90th percentiles of practice rates
    dispersion: Dispersion
    method: LimitMethod  # the limits bands were judged against
    abc: float | None
    abc_practices: int


@dataclass(frozen=True, slots=True)
class Funnel:
    summary: Summary
    practices: tuple[PracticeResult, ...]

    def limit_curve(
        self, n_values: Sequence[int], method: LimitMethod | None = None
    ) -> list[Limits]:
        """Limits at arbitrary denominators (for drawing the funnel)."""
        return limits_for(self.summary, np.asarray(n_values), method or self.summary.method)

    def by_practice(self) -> dict[str, PracticeResult]:
        return {p.practice: p for p in self.practices}


def limits_for(summary: Summary, n: np.ndarray, method: LimitMethod) -> list[Limits]:
    """Funnel limits at each denominator in ``n`` (all > 0) by ``method``."""
    cols = limit_columns(summary, n, method)
    if cols is None:
        return []
    # Python floats by tolist (one call per array, not one conversion per practice).
    columns = (cols[k].tolist() for k in ("low_95", "high_95", "low_998", "high_998"))
    return [Limits(a, b, c, d) for a, b, c, d in zip(*columns, strict=True)]


def limit_columns(
    summary: Summary, n: np.ndarray, method: LimitMethod
) -> dict[str, np.ndarray] | None:
    """:func:`limits_for` as four arrays (``low_95``, ``high_95``, ``low_998``,
    ``high_998``); None where there are none (no pooled rate, or no denominator)."""
    p0 = summary.pooled
    if p0 is None or n.size == 0:
        return None
    if p0 <= 0.0 or p0 >= 1.0:
        # No variation is possible around a rate of 0 or 1: every method collapses onto it.
        same = np.full(n.size, float(p0))
        return {k: same for k in ("low_95", "high_95", "low_998", "high_998")}
    cols: dict[str, np.ndarray] = {}
    for level in LEVELS:
        z = z_for(level)
        lo_p, hi_p = (1 - level) / 2, 1 - (1 - level) / 2
        tag = "95" if level == 0.95 else "998"
        if method == "exact":
            # Over the distinct denominators only (a national group's 6,500 practices have a
            # few hundred): the binomial quantiles are most of a funnel's CPU.
            distinct, back = np.unique(np.asarray(n, dtype=np.int64), return_inverse=True)
            lo = exact_limits(p0, distinct, lo_p)[back]
            hi = exact_limits(p0, distinct, hi_p)[back]
        elif method == "normal":
            lo, hi = normal_limits(p0, n, -z), normal_limits(p0, n, z)
        elif method == "wilson":
            lo, hi = wilson_limits(p0, n, hi_p, "low"), wilson_limits(p0, n, hi_p, "high")
        elif method == "multiplicative":
            phi = summary.dispersion.phi or 1.0
            phi = max(phi, 1.0)  # only ever widen
            lo, hi = multiplicative_limits(p0, n, -z, phi), multiplicative_limits(p0, n, z, phi)
        elif method == "additive":
            tau2 = summary.dispersion.tau2
            lo, hi = additive_limits(p0, n, -z, tau2), additive_limits(p0, n, z, tau2)
        else:  # pragma: no cover - Literal guards this
            raise ValueError(f"unknown limit method {method!r}")
        cols[f"low_{tag}"] = np.asarray(lo, dtype=float)
        cols[f"high_{tag}"] = np.asarray(hi, dtype=float)
    return cols


def band_of(rate: float, lim: Limits) -> Band:
    """The funnel band a rate falls in (a rate on a limit is within it)."""
    if rate > lim.high_998:
        return "high_998"
    if rate > lim.high_95:
        return "high_95"
    if rate < lim.low_998:
        return "low_998"
    if rate < lim.low_95:
        return "low_95"
    return "within"


def achievable_benchmark(
    counts: Iterable[tuple[int, int]], share: float = ABC_SHARE
) -> tuple[float, int] | None:
    """Kiefe et al.'s Achievable Benchmark of Care: rank practices by the adjusted performance
    fraction ``(x + 1) / (n + 2)`` (so small denominators cannot top the ranking by luck), take
    the best until they hold at least ``share`` of the network's denominator, and return their
    pooled rate ``sum(x) / sum(n)`` and how many practices that took. Practices tied with the
    last one taken are taken too (the ranking cannot separate them)."""
    rows = [(x, n) for x, n in counts if n > 0]
    total = sum(n for _, n in rows)
    if total == 0:
        return None
    ranked = sorted(rows, key=lambda r: (r[0] + 1) / (r[1] + 2), reverse=True)
    need = share * total
    taken_x = taken_n = taken = 0
    last_apf: float | None = None
    for x, n in ranked:
        apf = (x + 1) / (n + 2)
        if taken_n >= need and (last_apf is None or not math.isclose(apf, last_apf)):
            break
        taken_x, taken_n, taken, last_apf = taken_x + x, taken_n + n, taken + 1, apf
    return min(taken_x / taken_n, 1.0), taken


def achievable_benchmark_arrays(
    x: np.ndarray, n: np.ndarray, share: float = ABC_SHARE
) -> tuple[float, int] | None:
    """:func:`achievable_benchmark` over arrays (int64): the same ranking, the same ties and the
    same sums, sorted by NumPy instead of per practice in Python (a national refresh ranks
    6,500 practices for each of 960 groups)."""
    keep = n > 0
    xs, ns = x[keep], n[keep]
    total = int(ns.sum())
    if total == 0:
        return None
    apf = (xs + 1) / (ns + 2)
    order = np.argsort(-apf, kind="stable")  # Python's sorted(reverse=True) keeps ties in order
    xs, ns, apf = xs[order], ns[order], apf[order]
    need = share * total
    before = np.concatenate(([0], np.cumsum(ns)[:-1]))  # denominators taken before each
    reached = np.flatnonzero(before >= need)
    stop = int(reached[0]) if reached.size else len(ns)
    # past the share: still take those tied with the last one taken (isclose, chained)
    apf_l = apf.tolist()
    while 0 < stop < len(ns) and math.isclose(apf_l[stop], apf_l[stop - 1]):
        stop += 1
    taken_x, taken_n = int(xs[:stop].sum()), int(ns[:stop].sum())
    return min(taken_x / taken_n, 1.0), stop


def funnel(
    cells: Sequence[Counts],
    *,
    method: LimitMethod | Literal["auto"] = "auto",
    alpha: float = DISPERSION_ALPHA,
) -> Funnel:
    """Every statistic for one indicator, period and peer group.

    ``method="auto"`` judges bands against exact binomial limits, or against additive
    random-effects limits when the dispersion test is significant at ``alpha``."""
    prepared = _prepare(cells)
    summary = _summary(prepared, method, alpha)
    return Funnel(summary, _results(cells, prepared, summary))


def summarise(
    cells: Sequence[Counts],
    *,
    method: LimitMethod | Literal["auto"] = "auto",
    alpha: float = DISPERSION_ALPHA,
) -> Summary:
    """:func:`funnel`'s summary alone (no practice results): what a benchmark refresh stores."""
    return _summary(_prepare(cells), method, alpha)


def practice_results(cells: Sequence[Counts], summary: Summary) -> tuple[PracticeResult, ...]:
    """:func:`funnel`'s practice results for ``cells`` judged against a summary computed
    before (:func:`summarise` over the same cells, as stored by a refresh): each practice's
    rate, intervals, z, band and limits depend on the group only through its pooled rate,
    method and dispersion, so they are computed when read, not stored."""
    return _results(cells, _prepare(cells), summary)


@dataclass(frozen=True, slots=True)
class _Prepared:
    statuses: list[RateStatus]
    usable: list[Counts]
    x: np.ndarray
    n: np.ndarray
    suppressed: int
    empty: int
    rounded: int


def _prepare(cells: Sequence[Counts]) -> _Prepared:
    # Each practice's status once (a national group has 6,500; the property is read five times).
    statuses = [c.status for c in cells]
    usable_at = [_usable(st, c.denominator) for c, st in zip(cells, statuses, strict=True)]
    usable = [c for c, u in zip(cells, usable_at, strict=True) if u]
    return _Prepared(
        statuses=statuses,
        usable=usable,
        x=np.array([c.capped_numerator for c in usable], dtype=np.int64),
        n=np.array([c.denominator or 0 for c in usable], dtype=np.int64),
        suppressed=statuses.count("suppressed"),
        empty=sum(
            1
            for c, st in zip(cells, statuses, strict=True)
            if st != "suppressed" and (c.denominator or 0) == 0
        ),
        rounded=sum(1 for st, u in zip(statuses, usable_at, strict=True) if u and st == "rounded"),
    )


def _summary(p: _Prepared, method: LimitMethod | Literal["auto"], alpha: float) -> Summary:
    return summary_of_arrays(
        p.x,
        p.n,
        practices=len(p.statuses),
        suppressed=p.suppressed,
        empty=p.empty,
        rounded=p.rounded,
        method=method,
        alpha=alpha,
    )


def summary_of_arrays(
    x: np.ndarray,
    n: np.ndarray,
    *,
    practices: int,
    suppressed: int,
    empty: int,
    rounded: int,
    method: LimitMethod | Literal["auto"] = "auto",
    alpha: float = DISPERSION_ALPHA,
) -> Summary:
    """The summary of one funnel from its included practices' capped numerators ``x`` and
    denominators ``n`` (int64, every ``n`` > 0, in practice order) and the counts of practices
    in each state: :func:`funnel`'s summary, which is computed by this function too."""
    num, den = int(x.sum()), int(n.sum())
    p0 = num / den if den else None
    rates = x / n if x.size else np.array([])
    disp = (
        dispersion(x, n, p0, alpha)
        if p0 is not None
        else Dispersion(0, None, None, None, False, 0.0)
    )
    if method == "auto":
        chosen: LimitMethod = "additive" if disp.overdispersed else "exact"
    else:
        chosen = method
    abc = achievable_benchmark_arrays(x, n)
    # One call for every quantile shown (each computed as on its own): 5 calls cost 5 sorts.
    qs = [0.5, 0.25, 0.75, *(i / 10 for i in range(1, 10))]
    q = [float(v) for v in np.quantile(rates, qs)] if rates.size else None
    return Summary(
        practices=practices,
        included=int(x.size),
        suppressed=suppressed,
        empty=empty,
        rounded=rounded,
        numerator=num,
        denominator=den,
        pooled=p0,
        pooled_ci95=wilson_interval(num, den) if den else None,
        median=q[0] if q else None,
        q1=q[1] if q else None,
        q3=q[2] if q else None,
        deciles=tuple(q[3:]) if q else None,
        dispersion=disp,
        method=chosen,
        abc=abc[0] if abc else None,
        abc_practices=abc[1] if abc else 0,
    )


def _results(cells: Sequence[Counts], p: _Prepared, summary: Summary) -> tuple[PracticeResult, ...]:
    x, n, usable, statuses = p.x, p.n, p.usable, p.statuses
    p0, chosen, disp = summary.pooled, summary.method, summary.dispersion
    rates = x / n if len(usable) else np.array([])
    lims = limits_for(summary, n, chosen) if p0 is not None else []
    z = arcsine_z(x, n, p0) if p0 is not None and 0 < p0 < 1 else np.zeros(len(usable))
    if chosen == "additive" and disp.tau2 > 0:
        z = z / np.sqrt(1 + 4 * n * disp.tau2)  # (y - theta0) / sqrt(s^2 + tau^2)
    elif chosen == "multiplicative" and (disp.phi or 0) > 1:
        z = z / math.sqrt(disp.phi or 1.0)
    by_id = {c.practice: i for i, c in enumerate(usable)}
    lo95, hi95 = wilson_arrays(x, n, 0.95) if len(usable) else (np.array([]), np.array([]))
    lo998, hi998 = wilson_arrays(x, n, 0.998) if len(usable) else (np.array([]), np.array([]))

    # Python floats once per array: indexing a NumPy array per practice costs several times more.
    rate_l, z_l = rates.tolist(), z.tolist()
    lo95_l, hi95_l, lo998_l, hi998_l = lo95.tolist(), hi95.tolist(), lo998.tolist(), hi998.tolist()
    results = []
    for c, st in zip(cells, statuses, strict=True):
        i = by_id.get(c.practice)
        if i is None:
            note = "suppressed" if st == "suppressed" else "no eligible patients"
            results.append(
                PracticeResult(
                    c.practice, c.numerator, c.denominator, st, None, None, None,
                    st == "rounded", None, None, None, note,
                )
            )  # fmt: skip
            continue
        rate = rate_l[i]
        results.append(
            PracticeResult(
                practice=c.practice,
                numerator=c.numerator,
                denominator=c.denominator,
                status=st,
                rate=rate,
                ci95=(lo95_l[i], hi95_l[i]),
                ci998=(lo998_l[i], hi998_l[i]),
                approximate=st == "rounded",
                z=z_l[i],
                band=band_of(rate, lims[i]),
                limits=lims[i],
            )
        )
    return tuple(results)


@dataclass(frozen=True, slots=True)
class ResultColumns:
    """:func:`_results` for a group given as arrays, as columns (one entry per practice, in
    order): what :func:`practice_results` gives, without an object per practice."""

    status: list[str]
    rate: list[float | None]
    lo95: list[float | None]
    hi95: list[float | None]
    lo998: list[float | None]
    hi998: list[float | None]
    z: list[float | None]
    band: list[str | None]
    limits: list[tuple[float, float, float, float] | None]
    note: list[str | None]


_BANDS = np.array(["within", "low_95", "low_998", "high_95", "high_998"], dtype=object)


def result_columns(
    num: np.ndarray,
    den: np.ndarray,
    suppressed: np.ndarray,
    rounded: np.ndarray,
    summary: Summary,
) -> ResultColumns:
    """Each practice's result against a stored ``summary``, from arrays: ``num`` and ``den``
    (int64; any value where ``suppressed``), ``suppressed`` and ``rounded`` (bool) as
    :attr:`Counts.status` gives them. The same values as :func:`practice_results` (each array
    operation is the one :func:`_results` applies; tests/benchmarks/test_period_refresh.py)."""
    size = int(num.size)
    usable = ~suppressed & (den > 0)
    at = np.flatnonzero(usable)
    x = np.minimum(num, den)[at]
    n = den[at]
    p0, chosen, disp = summary.pooled, summary.method, summary.dispersion
    status = np.where(suppressed, "suppressed", np.where(rounded, "rounded", "exact")).tolist()
    rate: list[float | None] = [None] * size
    lo95: list[float | None] = [None] * size
    hi95: list[float | None] = [None] * size
    lo998: list[float | None] = [None] * size
    hi998: list[float | None] = [None] * size
    zs: list[float | None] = [None] * size
    band: list[str | None] = [None] * size
    limits: list[tuple[float, float, float, float] | None] = [None] * size
    note: list[str | None] = [
        "suppressed" if sp else (None if u else "no eligible patients")
        for sp, u in zip(suppressed.tolist(), usable.tolist(), strict=True)
    ]
    if at.size:
        rates = x / n
        z = arcsine_z(x, n, p0) if p0 is not None and 0 < p0 < 1 else np.zeros(at.size)
        if chosen == "additive" and disp.tau2 > 0:
            z = z / np.sqrt(1 + 4 * n * disp.tau2)
        elif chosen == "multiplicative" and (disp.phi or 0) > 1:
            z = z / math.sqrt(disp.phi or 1.0)
        a, b = wilson_arrays(x, n, 0.95)
        c, d = wilson_arrays(x, n, 0.998)
        cols = limit_columns(summary, n, chosen) if p0 is not None else None
        idx = at.tolist()
        for col, values in ((rate, rates), (lo95, a), (hi95, b), (lo998, c), (hi998, d), (zs, z)):
            for i, v in zip(idx, values.tolist(), strict=True):
                col[i] = v
        if cols is not None:
            l95, h95, l998, h998 = (cols[k] for k in ("low_95", "high_95", "low_998", "high_998"))
            # band_of: above the 99.8% limit first, then the 95%, then below; on a limit: within
            code = np.select(
                [rates > h998, rates > h95, rates < l998, rates < l95], [4, 3, 2, 1], default=0
            )
            for i, bnd, lim in zip(
                idx, _BANDS[code].tolist(),
                zip(l95.tolist(), h95.tolist(), l998.tolist(), h998.tolist(), strict=True),
                strict=True,
            ):  # fmt: skip
                band[i], limits[i] = bnd, lim
    return ResultColumns(status, rate, lo95, hi95, lo998, hi998, zs, band, limits, note)


def results_many(cells: Sequence[Counts], summaries: Sequence[Summary]) -> list[PracticeResult]:
    """Each practice judged against its own group's summary (a practice's history: one entry
    per indicator and period), vectorised: element ``i`` is
    ``practice_results([cells[i]], summaries[i])[0]``, the same values (each array operation
    is the one :func:`_results` applies to a group, element by element)."""
    out: list[PracticeResult | None] = [None] * len(cells)
    todo: dict[str, list[int]] = {}
    for i, (c, s) in enumerate(zip(cells, summaries, strict=True)):
        st = c.status
        if not _usable(st, c.denominator) or s.pooled is None:
            out[i] = _results([c], _prepare([c]), s)[0]
        elif s.method in ("exact", "additive") and 0.0 < s.pooled < 1.0:
            todo.setdefault(s.method, []).append(i)
        else:  # degenerate pooled rates and the methods a stored summary never has
            out[i] = _results([c], _prepare([c]), s)[0]
    for method, idx in todo.items():
        cs = [cells[i] for i in idx]
        ss = [summaries[i] for i in idx]
        x = np.array([c.capped_numerator for c in cs], dtype=np.int64)
        n = np.array([c.denominator or 0 for c in cs], dtype=np.int64)
        p0 = np.array([s.pooled for s in ss], dtype=float)
        theta0 = np.array([math.asin(math.sqrt(s.pooled or 0.0)) for s in ss], dtype=float)
        rates = x / n
        p = np.clip(np.asarray(x, float) / np.asarray(n, float), 0.0, 1.0)
        z = (np.arcsin(np.sqrt(p)) - theta0) * 2 * np.sqrt(np.asarray(n, float))
        cols: dict[str, np.ndarray] = {}
        if method == "additive":
            tau2 = np.array([s.dispersion.tau2 for s in ss], dtype=float)
            widen = tau2 > 0
            z = np.where(widen, z / np.sqrt(1 + 4 * n * tau2), z)
            s2 = 1 / (4 * np.asarray(n, float))
            for level in LEVELS:
                zl = z_for(level)
                tag = "95" if level == 0.95 else "998"
                cols[f"low_{tag}"] = _back(theta0 + -zl * np.sqrt(s2 + tau2))
                cols[f"high_{tag}"] = _back(theta0 + zl * np.sqrt(s2 + tau2))
        else:
            for level in LEVELS:
                lo_p, hi_p = (1 - level) / 2, 1 - (1 - level) / 2
                tag = "95" if level == 0.95 else "998"
                cols[f"low_{tag}"] = _exact_limits_many(p0, n, lo_p)
                cols[f"high_{tag}"] = _exact_limits_many(p0, n, hi_p)
        lo95, hi95 = wilson_arrays(x, n, 0.95)
        lo998, hi998 = wilson_arrays(x, n, 0.998)
        lims = [
            Limits(a, b, c, d)
            for a, b, c, d in zip(
                *(np.asarray(cols[k], dtype=float).tolist() for k in ("low_95", "high_95", "low_998", "high_998")),
                strict=True,
            )
        ]  # fmt: skip
        for j, (i, c, rate, zz, a, b, lo, hi, lim) in enumerate(
            zip(idx, cs, rates.tolist(), z.tolist(), lo95.tolist(), hi95.tolist(),
                lo998.tolist(), hi998.tolist(), lims, strict=True)
        ):  # fmt: skip
            del j
            st = c.status
            out[i] = PracticeResult(
                practice=c.practice, numerator=c.numerator, denominator=c.denominator, status=st,
                rate=rate, ci95=(a, b), ci998=(lo, hi), approximate=st == "rounded", z=zz,
                band=band_of(rate, lim), limits=lim,
            )  # fmt: skip
    return [r for r in out if r is not None]


def _exact_limits_many(p0: np.ndarray, n: np.ndarray, prob: float) -> np.ndarray:
    """:func:`exact_limits` with a pooled rate per element (every one strictly inside 0-1)."""
    r = sps.binom.ppf(prob, n, p0)
    f_r = sps.binom.cdf(r, n, p0)
    f_prev = np.where(r >= 1, sps.binom.cdf(r - 1, n, p0), 0.0)
    gap = f_r - f_prev
    alpha = np.divide(f_r - prob, gap, out=np.zeros_like(gap), where=gap > 0)
    clipped: np.ndarray = np.clip((r - alpha) / n, 0.0, 1.0)
    return clipped


# --- trends ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """Change in rate from one period to the next."""

    period_from: str
    period_to: str
    rate_from: float | None
    rate_to: float | None
    difference: float | None
    z: float | None
    p_value: float | None
    beyond_chance: bool
    version_break: bool  # the indicator's version changed: not comparable
    status: RateStatus
    note: str | None = None


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """Pooled two-proportion z-test of ``x2/n2 - x1/n1``: (z, two-sided p). None when the
    pooled rate is 0 or 1 (no variance) or a denominator is 0."""
    if n1 <= 0 or n2 <= 0:
        return None
    p = (x1 + x2) / (n1 + n2)
    if p <= 0.0 or p >= 1.0:
        return None
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))  # two-sided normal p (= 2 * norm.sf(|z|))


@dataclass(frozen=True, slots=True)
class TrendPoint:
    period: str
    version: int
    counts: Counts


def changes(points: Sequence[TrendPoint], alpha: float = 0.05) -> list[Change]:
    """Consecutive changes along a trend (points in period order). A version change between
    two points marks a break: the change is shown but not tested."""
    out: list[Change] = []
    for a, b in zip(points, points[1:], strict=False):
        ra, rb = a.counts.rate, b.counts.rate
        brk = a.version != b.version
        status: RateStatus = (
            "suppressed"
            if "suppressed" in (a.counts.status, b.counts.status)
            else ("rounded" if "rounded" in (a.counts.status, b.counts.status) else "exact")
        )
        note: str | None
        if ra is None or rb is None:
            note = "suppressed" if status == "suppressed" else "no eligible patients"
            out.append(
                Change(a.period, b.period, ra, rb, None, None, None, False, brk, status, note)
            )
            continue
        diff = rb - ra
        test = None if brk else two_proportion_test(
            a.counts.capped_numerator, a.counts.denominator or 0,
            b.counts.capped_numerator, b.counts.denominator or 0,
        )  # fmt: skip
        note = "indicator version changed" if brk else None
        z, p = test if test else (None, None)
        out.append(
            Change(
                a.period,
                b.period,
                ra,
                rb,
                diff,
                z,
                p,
                p is not None and p < alpha,
                brk,
                status,
                note,
            )
        )
    return out


def pool(points: Iterable[Counts], practice: str = "network") -> Counts:
    """Pooled counts over practices (suppressed cells left out, as in every pooled rate)."""
    rows = [c for c in points if c.usable]
    status: CountStatus = "rounded" if any(c.status == "rounded" for c in rows) else "exact"
    return Counts(
        practice,
        sum(c.capped_numerator for c in rows),
        sum(c.denominator or 0 for c in rows),
        status,
        status,
    )


# --- peer groups ------------------------------------------------------------------------------

PeerDimension = Literal["network", "pcn", "imd", "size"]
PEER_DIMENSIONS: tuple[PeerDimension, ...] = ("network", "pcn", "imd", "size")


@dataclass(frozen=True, slots=True)
class PeerBands:
    """The list-size bands of the size peer groups and of a practice's view of its peers (the
    aggregator settings ``size_band_edges`` and ``min_peers_per_band``).

    ``edges`` are the list sizes where one band ends and the next begins: (5000, 10000, 15000)
    gives "under 5,000", "5,000-9,999", "10,000-14,999" and "15,000 and over". ``min_peers`` is
    how many peers each band a practice's view shows must hold (bands are merged until they do).
    """

    edges: tuple[int, ...]
    min_peers: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", check_size_band_edges(self.edges))
        if isinstance(self.min_peers, bool) or not isinstance(self.min_peers, int):
            raise ValueError(f"min_peers must be a whole number, got {self.min_peers!r}")
        if self.min_peers < 1:
            raise ValueError(f"min_peers must be at least 1, got {self.min_peers}")

    @property
    def count(self) -> int:
        """How many bands there are."""
        return len(self.edges) + 1

    def index(self, list_size: int) -> int:
        """The index of the band ``list_size`` falls in (0: the smallest lists)."""
        return bisect.bisect_right(self.edges, list_size)

    def label(self, first: int, last: int | None = None) -> str:
        """The label of band ``first``, or of bands ``first`` to ``last`` merged."""
        last = first if last is None else last
        top = last == len(self.edges)
        if first == 0 and top:
            return "any list size"
        if first == 0:
            return f"under {self.edges[last]:,}"
        lo = self.edges[first - 1]
        return f"{lo:,} and over" if top else f"{lo:,}-{self.edges[last] - 1:,}"

    def labels(self) -> list[str]:
        """Every band's label, smallest lists first."""
        return [self.label(i) for i in range(self.count)]

    def size_band(self, list_size: int | None) -> str | None:
        """The label of the band a practice's registered list falls in."""
        return None if list_size is None else self.label(self.index(list_size))


def imd_band(decile: int | None) -> str | None:
    """IMD quintile band from the practice population's IMD decile (1 = most deprived)."""
    if decile is None:
        return None
    if not 1 <= decile <= 10:
        raise ValueError(f"IMD decile must be 1..10, got {decile}")
    quintile = (decile + 1) // 2
    suffix = {1: " (most deprived)", 5: " (least deprived)"}.get(quintile, "")
    return f"IMD quintile {quintile}{suffix}"


@dataclass(frozen=True, slots=True)
class PracticeAttributes:
    practice: str
    pcn: str | None = None
    imd_decile: int | None = None
    list_size: int | None = None

    def group(self, dimension: PeerDimension, bands: PeerBands) -> str | None:
        """The practice's peer group along ``dimension`` (``bands``: the size groups')."""
        if dimension == "network":
            return "network"
        if dimension == "pcn":
            return self.pcn
        if dimension == "imd":
            return imd_band(self.imd_decile)
        return bands.size_band(self.list_size)


def peer_groups(
    attributes: Iterable[PracticeAttributes], dimension: PeerDimension, bands: PeerBands
) -> dict[str, list[str]]:
    """Practices by peer group along one dimension; practices without the attribute are left
    out of that dimension's groups."""
    groups: dict[str, list[str]] = {}
    for a in attributes:
        key = a.group(dimension, bands)
        if key is not None:
            groups.setdefault(key, []).append(a.practice)
    return groups


def group_funnels(
    cells: Sequence[Counts],
    attributes: Mapping[str, PracticeAttributes],
    dimension: PeerDimension,
    bands: PeerBands,
    **kwargs: object,
) -> dict[str, Funnel]:
    """A funnel per peer group along ``dimension`` (``bands``: the size groups')."""
    members = peer_groups(attributes.values(), dimension, bands)
    out = {}
    for key, practices in members.items():
        keep = set(practices)
        out[key] = funnel([c for c in cells if c.practice in keep], **kwargs)  # type: ignore[arg-type]
    return out


# --- helpers for callers ------------------------------------------------------------------------
