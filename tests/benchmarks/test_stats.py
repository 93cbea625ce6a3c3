"""aggregator.benchmarks.stats against independent computations: statsmodels, plain-Python
binomial sums, published worked numbers (Newcombe 1998, the Fingertips funnel test table of
PHStatsMethods) and hand-worked examples."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import optimize
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from aggregator.benchmarks import stats as S
from aggregator.benchmarks.stats import Counts, TrendPoint

# --- Wilson intervals ------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.95, 0.998])
@pytest.mark.parametrize(
    ("x", "n"), [(0, 1), (1, 1), (0, 20), (1, 29), (5, 7), (81, 263), (500, 1000), (9999, 10000)]
)
def test_wilson_matches_statsmodels(x: int, n: int, level: float) -> None:
    lo, hi = S.wilson_interval(x, n, level)  # type: ignore[misc]
    ref_lo, ref_hi = proportion_confint(x, n, alpha=1 - level, method="wilson")
    assert lo == pytest.approx(ref_lo, abs=1e-12)
    assert hi == pytest.approx(ref_hi, abs=1e-12)


@pytest.mark.parametrize(
    ("x", "n", "lo", "hi"),
    # Newcombe RG, Stat Med 1998;17:857-872, Table II, method 3 (Wilson score, no correction).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_worked_examples(x: int, n: int, lo: float, hi: float) -> None:
    got = S.wilson_interval(x, n, 0.95)
    assert got is not None
    assert got[0] == pytest.approx(lo, abs=6e-5)
    assert got[1] == pytest.approx(hi, abs=6e-5)


def test_wilson_denominator_zero_has_no_interval() -> None:
    assert S.wilson_interval(0, 0) is None


def test_z_for_levels() -> None:
    assert S.z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert S.z_for(0.998) == pytest.approx(3.090232, abs=1e-6)


# --- exact binomial limits -------------------------------------------------------------------


def _cdf(r: int, n: int, p: float) -> float:
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(r + 1)) if r >= 0 else 0.0


def _exact_by_hand(p0: float, n: int, prob: float) -> float:
    r = next(r for r in range(n + 1) if _cdf(r, n, p0) >= prob)
    f_r, f_prev = _cdf(r, n, p0), _cdf(r - 1, n, p0)
    return (r - (f_r - prob) / (f_r - f_prev)) / n


def test_exact_limit_hand_worked() -> None:
    # n = 10, p0 = 0.5: F(7) = 968/1024, F(8) = 1013/1024, so r = 8 and
    # alpha = (1013/1024 - 0.975) / (45/1024) = 0.32444..., limit = (8 - alpha) / 10.
    alpha = (1013 / 1024 - 0.975) / (45 / 1024)
    assert S.exact_limit(0.5, 10, 0.975) == pytest.approx((8 - alpha) / 10, abs=1e-12)
    assert S.exact_limit(0.5, 10, 0.975) == pytest.approx(0.767556, abs=1e-6)


@pytest.mark.parametrize("p0", [0.03, 0.42, 0.8064, 0.97])
@pytest.mark.parametrize("n", [1, 5, 17, 60, 240])
@pytest.mark.parametrize("prob", [0.001, 0.025, 0.975, 0.999])
def test_exact_limits_match_plain_binomial_sums(p0: float, n: int, prob: float) -> None:
    expected = min(max(_exact_by_hand(p0, n, prob), 0.0), 1.0)
    assert S.exact_limit(p0, n, prob) == pytest.approx(expected, abs=1e-9)
    assert S.exact_limits(p0, np.array([n, n]), prob)[0] == pytest.approx(expected, abs=1e-9)


def test_exact_limits_degenerate_target() -> None:
    assert S.exact_limit(0.0, 50, 0.999) == 0.0
    assert S.exact_limit(1.0, 50, 0.001) == 1.0
    with pytest.raises(ValueError, match="positive denominator"):
        S.exact_limit(0.5, 0, 0.975)


# --- Fingertips (Wilson-based) limits ----------------------------------------------------------

# (population, lower 2s, upper 2s, lower 3s, upper 3s) in %, baseline 80.642448%: rows of
# PHStatsMethods tests/test_data/testdata_funnel_prop_outputs.csv (the Python port of
# PHEindicatormethods' funnel tests).
FINGERTIPS = [
    (1, 3.204264, 100, 0, 100),
    (3, 35.933491, 100, 10.150815, 100),
    (18, 62.390093, 98.894803, 51.864359, 100),
    (41, 68.548635, 92.73626, 61.574398, 99.710497),
    (102, 72.974925, 88.309971, 68.553233, 92.731663),
    (1008, 78.203374, 83.081521, 76.796814, 84.488082),
    (9998, 79.867989, 81.416907, 79.421375, 81.863521),
    (110000, 80.408963, 80.875933, 80.274317, 81.010578),
]


@pytest.mark.parametrize(("n", "lo2", "hi2", "lo3", "hi3"), FINGERTIPS)
def test_wilson_limits_match_fingertips_table(
    n: int, lo2: float, hi2: float, lo3: float, hi3: float
) -> None:
    p0 = 0.80642448
    arr = np.array([n])
    assert S.wilson_limits(p0, arr, 0.975, "low")[0] * 100 == pytest.approx(lo2, abs=1e-5)
    assert S.wilson_limits(p0, arr, 0.975, "high")[0] * 100 == pytest.approx(hi2, abs=1e-5)
    assert S.wilson_limits(p0, arr, 0.999, "low")[0] * 100 == pytest.approx(lo3, abs=1e-5)
    assert S.wilson_limits(p0, arr, 0.999, "high")[0] * 100 == pytest.approx(hi3, abs=1e-5)


@pytest.mark.parametrize("n", [20, 150, 4000])
def test_wilson_limit_is_where_the_wilson_interval_touches_p0(n: int) -> None:
    # Independent route: solve wilson_upper(r, n) = p0 for r numerically.
    p0 = 0.63
    lower = S.wilson_limits(p0, np.array([n]), 0.975, "low")[0]
    root = optimize.brentq(lambda r: S.wilson_interval(r * n, n, 0.95)[1] - p0, 0.0, p0)  # type: ignore[index]
    assert lower == pytest.approx(root, abs=1e-9)


def test_normal_limits_hand_worked() -> None:
    # p0 = 0.7, n = 100: sd = sqrt(0.21 / 100) = 0.0458258
    lo = S.normal_limits(0.7, np.array([100]), -1.959964)[0]
    assert lo == pytest.approx(0.7 - 1.959964 * 0.0458258, abs=1e-6)


# --- overdispersion ----------------------------------------------------------------------------


def _quantile7(values: list[float], q: float) -> float:
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    return s[lo] + (h - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


def test_dispersion_by_hand() -> None:
    x = [30, 55, 20, 80, 41, 12, 70, 66, 90, 35, 25, 50]
    n = [100, 120, 60, 110, 90, 40, 150, 100, 130, 70, 80, 95]
    p0 = sum(x) / sum(n)
    z = [
        (math.asin(math.sqrt(xi / ni)) - math.asin(math.sqrt(p0))) * 2 * math.sqrt(ni)
        for xi, ni in zip(x, n, strict=True)
    ]
    lo, hi = _quantile7(z, 0.1), _quantile7(z, 0.9)
    zw = [min(max(v, lo), hi) for v in z]
    phi = sum(v * v for v in zw) / len(zw)
    w = [4 * ni for ni in n]
    tau2 = max(0.0, (len(x) * phi - (len(x) - 1)) / (sum(w) - sum(v * v for v in w) / sum(w)))

    d = S.dispersion(np.array(x), np.array(n), p0)
    assert d.phi == pytest.approx(phi, rel=1e-12)
    assert d.statistic == pytest.approx(len(x) * phi, rel=1e-12)
    assert d.tau2 == pytest.approx(tau2, rel=1e-12)
    assert d.overdispersed  # these rates run from 0.2 to 0.7: far more spread than chance
    assert d.p_value is not None and d.p_value < 1e-6


def test_dispersion_without_winsorising_is_dersimonian_laird_q() -> None:
    # With no winsorising and the target at the inverse-variance mean, I*phi is Cochran's Q.
    from statsmodels.stats.meta_analysis import combine_effects

    x = np.array([30, 55, 20, 80, 41, 12, 70, 66])
    n = np.array([100, 120, 60, 110, 90, 40, 150, 100])
    y = np.arcsin(np.sqrt(x / n))
    w = 4 * n
    theta = float((w * y).sum() / w.sum())
    p_target = math.sin(theta) ** 2
    d = S.dispersion(x, n, p_target, share=0.0)
    ref = combine_effects(y, 1 / w, method_re="dl")
    assert d.statistic == pytest.approx(ref.q, rel=1e-9)
    assert d.tau2 == pytest.approx(ref.tau2, rel=1e-9)


def test_dispersion_test_is_quiet_for_pure_binomial_data() -> None:
    rng = np.random.default_rng(7)
    n = rng.integers(50, 3000, size=300)
    flagged = 0
    for _ in range(40):
        x = rng.binomial(n, 0.7)
        flagged += S.dispersion(x, n, x.sum() / n.sum()).overdispersed
    assert flagged <= 6  # nominal 5% of 40 is 2; winsorising makes the test conservative


def test_dispersion_detects_beta_binomial_spread() -> None:
    rng = np.random.default_rng(11)
    n = rng.integers(200, 3000, size=300)
    p = rng.beta(70, 30, size=300)  # between-practice sd ~ 4.6 points
    x = rng.binomial(n, p)
    d = S.dispersion(x, n, x.sum() / n.sum())
    assert d.overdispersed and d.tau2 > 0
    f = S.funnel(
        [Counts(str(i), int(a), int(b)) for i, (a, b) in enumerate(zip(x, n, strict=True))]
    )
    assert f.summary.method == "additive"
    # random-effects limits are wider than the exact ones at every denominator
    add = f.limit_curve([100, 1000], "additive")
    ex = f.limit_curve([100, 1000], "exact")
    for a, e in zip(add, ex, strict=True):
        assert a.low_95 < e.low_95 and a.high_95 > e.high_95


def test_multiplicative_limits_scale_sd_by_sqrt_phi() -> None:
    p0, n, z, phi = 0.6, np.array([400]), 1.959964, 2.5
    got = S.multiplicative_limits(p0, n, z, phi)[0]
    theta = math.asin(math.sqrt(p0)) + z * math.sqrt(phi) / (2 * 20)
    assert got == pytest.approx(math.sin(theta) ** 2, abs=1e-12)


def test_additive_limits_by_hand() -> None:
    p0, n, z, tau2 = 0.6, np.array([400]), -3.090232, 0.002
    got = S.additive_limits(p0, n, z, tau2)[0]
    theta = math.asin(math.sqrt(p0)) + z * math.sqrt(1 / 1600 + tau2)
    assert got == pytest.approx(math.sin(theta) ** 2, abs=1e-12)


# --- Achievable Benchmark of Care -------------------------------------------------------------


def test_abc_hand_worked() -> None:
    # total denominator 561, 10% = 56.1. APF: A 11/12 = .917, C 46/52 = .885, D .804, B 2/3 =
    # .667, E .749. A (10) then C (50) reach 60 >= 56.1: ABC = (10 + 45) / 60. B's raw 100%
    # on one patient does not put it first: that is what the adjustment is for.
    counts = [(10, 10), (1, 1), (45, 50), (80, 100), (300, 400)]
    abc, taken = S.achievable_benchmark(counts)  # type: ignore[misc]
    assert taken == 2
    assert abc == pytest.approx(55 / 60)


def test_abc_takes_practices_tied_with_the_last_one() -> None:
    counts = [(9, 10), (9, 10), (9, 10), (50, 100), (50, 100)]  # total 230, 10% = 23
    abc, taken = S.achievable_benchmark(counts)  # type: ignore[misc]
    assert taken == 3 and abc == pytest.approx(0.9)


def test_abc_of_nothing_is_none() -> None:
    assert S.achievable_benchmark([]) is None
    assert S.achievable_benchmark([(0, 0)]) is None


# --- the funnel -------------------------------------------------------------------------------


def _network() -> list[Counts]:
    return [
        Counts("A", 70, 100),
        Counts("B", 140, 200),
        Counts("C", 40, 100),  # far below
        Counts("D", 95, 100),  # far above
        Counts("E", None, 30, "suppressed", "exact"),
        Counts("F", 0, 0, "zero", "zero"),
        Counts("G", 105, 150, "rounded", "rounded"),
        Counts("H", 360, 500),
    ]


def test_funnel_pools_only_released_counts() -> None:
    f = S.funnel(_network(), method="exact")
    s = f.summary
    assert (s.practices, s.included, s.suppressed, s.empty, s.rounded) == (8, 6, 1, 1, 1)
    assert s.numerator == 70 + 140 + 40 + 95 + 105 + 360
    assert s.denominator == 100 + 200 + 100 + 100 + 150 + 500
    assert s.pooled == pytest.approx(s.numerator / s.denominator)
    rates = [0.7, 0.7, 0.4, 0.95, 0.7, 0.72]
    assert s.median == pytest.approx(statistics.median(rates))
    qs = statistics.quantiles(rates, n=4, method="inclusive")
    assert (s.q1, s.q3) == (pytest.approx(qs[0]), pytest.approx(qs[2]))
    dec = statistics.quantiles(rates, n=10, method="inclusive")
    assert s.deciles == pytest.approx(tuple(dec))


def test_funnel_marks_suppressed_empty_and_rounded() -> None:
    by = S.funnel(_network(), method="exact").by_practice()
    assert by["E"].status == "suppressed" and by["E"].rate is None and by["E"].band is None
    assert by["E"].note == "suppressed" and by["E"].ci95 is None
    assert by["F"].rate is None and by["F"].note == "no eligible patients"
    assert by["G"].status == "rounded" and by["G"].approximate
    assert not by["A"].approximate


def test_funnel_bands_against_exact_limits() -> None:
    f = S.funnel(_network(), method="exact")
    p0 = f.summary.pooled
    assert p0 is not None
    by = f.by_practice()
    assert by["C"].band == "low_998"
    assert by["D"].band == "high_998"
    assert by["A"].band == "within"
    # the limits a band was judged against are the exact binomial ones at that denominator
    assert by["C"].limits.low_998 == pytest.approx(_exact_by_hand(p0, 100, 0.001), abs=1e-9)  # type: ignore[union-attr]
    assert by["C"].limits.high_95 == pytest.approx(_exact_by_hand(p0, 100, 0.975), abs=1e-9)  # type: ignore[union-attr]
    for r in f.practices:
        if r.rate is not None:
            assert r.band == S.band_of(r.rate, r.limits)  # type: ignore[arg-type]
            assert r.ci95 is not None and r.ci998 is not None
            assert r.ci998[0] <= r.ci95[0] <= r.rate <= r.ci95[1] <= r.ci998[1]


def test_funnel_z_is_arcsine_scale() -> None:
    f = S.funnel(_network(), method="exact")
    p0 = f.summary.pooled
    a = f.by_practice()["A"]
    expected = (math.asin(math.sqrt(0.7)) - math.asin(math.sqrt(p0))) * 2 * 10  # type: ignore[arg-type]
    assert a.z == pytest.approx(expected)


@pytest.mark.parametrize("method", ["exact", "normal", "wilson", "multiplicative", "additive"])
def test_every_method_gives_ordered_limits(method: S.LimitMethod) -> None:
    f = S.funnel(_network(), method=method)
    for lim in f.limit_curve([1, 10, 100, 10000]):
        assert 0 <= lim.low_998 <= lim.low_95 <= lim.high_95 <= lim.high_998 <= 1


def test_denominator_zero_everywhere() -> None:
    f = S.funnel([Counts("A", 0, 0, "zero", "zero"), Counts("B", 0, 0, "zero", "zero")])
    assert f.summary.pooled is None and f.summary.included == 0 and f.summary.empty == 2
    assert f.summary.abc is None and f.summary.median is None
    assert all(p.band is None for p in f.practices)
    assert f.limit_curve([10]) == []


def test_all_suppressed() -> None:
    cells = [Counts(p, None, None, "suppressed", "suppressed") for p in "ABC"]
    f = S.funnel(cells)
    assert f.summary.pooled is None and f.summary.suppressed == 3
    assert all(p.status == "suppressed" and p.rate is None for p in f.practices)


def test_one_practice() -> None:
    f = S.funnel([Counts("A", 30, 40)])
    assert f.summary.pooled == 0.75 and f.summary.median == 0.75
    assert f.summary.dispersion.phi is None and not f.summary.dispersion.overdispersed
    assert f.practices[0].band == "within" and f.practices[0].z == pytest.approx(0.0)
    assert f.summary.abc == 0.75


@pytest.mark.parametrize("value", [0, 1])
def test_pooled_rate_of_zero_or_one(value: int) -> None:
    cells = [Counts(p, value * n, n) for p, n in (("A", 10), ("B", 200), ("C", 3000))]
    f = S.funnel(cells)
    assert f.summary.pooled == value
    for p in f.practices:
        assert p.band == "within" and p.z == 0.0
        assert p.limits is not None and p.limits.low_998 == p.limits.high_998 == value
    for method in ("exact", "normal", "wilson", "multiplicative", "additive"):
        for lim in f.limit_curve([5, 500], method):  # type: ignore[arg-type]
            assert lim.low_95 == pytest.approx(value) and lim.high_95 == pytest.approx(value)


def test_funnel_limits_vectorised_equal_scalar() -> None:
    f = S.funnel(_network(), method="exact")
    p0 = f.summary.pooled
    for n, lim in zip([3, 37, 911], f.limit_curve([3, 37, 911]), strict=True):
        assert lim.low_95 == pytest.approx(S.exact_limit(p0, n, 0.025), abs=1e-12)  # type: ignore[arg-type]
        assert lim.high_998 == pytest.approx(S.exact_limit(p0, n, 0.999), abs=1e-12)  # type: ignore[arg-type]


# --- trends ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(50, 100, 70, 100), (300, 1000, 320, 1000), (5, 9, 1, 12)]
)
def test_two_proportion_test_matches_statsmodels(x1: int, n1: int, x2: int, n2: int) -> None:
    z, p = S.two_proportion_test(x1, n1, x2, n2)  # type: ignore[misc]
    ref_z, ref_p = proportions_ztest([x2, x1], [n2, n1])
    assert z == pytest.approx(ref_z) and p == pytest.approx(ref_p)


def test_two_proportion_test_degenerate() -> None:
    assert S.two_proportion_test(0, 10, 0, 20) is None
    assert S.two_proportion_test(10, 10, 20, 20) is None
    assert S.two_proportion_test(1, 0, 2, 5) is None


def test_changes_flag_chance_breaks_and_suppression() -> None:
    pts = [
        TrendPoint("2026-01", 1, Counts("A", 50, 100)),
        TrendPoint("2026-02", 1, Counts("A", 75, 100)),  # beyond chance
        TrendPoint("2026-03", 1, Counts("A", 77, 100)),  # within chance
        TrendPoint("2026-04", 2, Counts("A", 90, 100)),  # version break
        TrendPoint("2026-05", 2, Counts("A", None, 100, "suppressed", "exact")),
    ]
    ch = S.changes(pts)
    assert [c.beyond_chance for c in ch] == [True, False, False, False]
    assert ch[0].difference == pytest.approx(0.25)
    assert (
        ch[2].version_break and ch[2].p_value is None and ch[2].note == "indicator version changed"
    )
    assert ch[3].status == "suppressed" and ch[3].difference is None


def test_pool_leaves_out_suppressed() -> None:
    pooled = S.pool(
        [
            Counts("A", 5, 10),
            Counts("B", None, 10, "suppressed"),
            Counts("C", 10, 20, "rounded", "rounded"),
        ]
    )
    assert (pooled.numerator, pooled.denominator, pooled.status) == (15, 30, "rounded")


# --- peer groups ------------------------------------------------------------------------------


#: The network's default bands (aggregator settings size_band_edges, min_peers_per_band).
BANDS = S.PeerBands((5000, 10000, 15000), 3)


def test_peer_groups_and_bands() -> None:
    attrs = [
        S.PracticeAttributes("A", "PCN1", 2, 3000),
        S.PracticeAttributes("B", "PCN1", 10, 12000),
        S.PracticeAttributes("C", "PCN2", 1, 4999),
        S.PracticeAttributes("D", None, None, 20000),
    ]
    assert S.peer_groups(attrs, "pcn", BANDS) == {"PCN1": ["A", "B"], "PCN2": ["C"]}
    assert S.peer_groups(attrs, "network", BANDS) == {"network": ["A", "B", "C", "D"]}
    assert S.peer_groups(attrs, "imd", BANDS) == {
        "IMD quintile 1 (most deprived)": ["A", "C"],
        "IMD quintile 5 (least deprived)": ["B"],
    }
    assert S.peer_groups(attrs, "size", BANDS) == {
        "under 5,000": ["A", "C"],
        "10,000-14,999": ["B"],
        "15,000 and over": ["D"],
    }
    with pytest.raises(ValueError, match="IMD decile"):
        S.imd_band(11)


def test_other_band_edges_change_the_size_groups() -> None:
    attrs = [
        S.PracticeAttributes(p, list_size=n) for p, n in (("A", 3000), ("B", 7999), ("C", 8000))
    ]
    assert S.peer_groups(attrs, "size", S.PeerBands((8000,), 2)) == {
        "under 8,000": ["A", "B"],
        "8,000 and over": ["C"],
    }
    assert S.PeerBands((), 1).labels() == ["any list size"]
    assert BANDS.labels() == ["under 5,000", "5,000-9,999", "10,000-14,999", "15,000 and over"]
    assert BANDS.label(1, 3) == "5,000 and over" and BANDS.label(0, 1) == "under 10,000"


@pytest.mark.parametrize(
    ("edges", "min_peers", "message"),
    [
        ((5000, 5000), 3, "no repeats"),
        ((10000, 5000), 3, "ascending"),
        ((0, 5000), 3, "at least 1"),
        ((5000,), 0, "min_peers must be at least 1"),
    ],
)
def test_bad_bands_are_refused(edges: tuple[int, ...], min_peers: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S.PeerBands(edges, min_peers)


def test_group_funnels_pool_within_group() -> None:
    attrs = {p: S.PracticeAttributes(p, "X" if p in "AB" else "Y") for p in "ABCDGH"}
    groups = S.group_funnels(_network(), attrs, "pcn", BANDS)
    assert groups["X"].summary.pooled == pytest.approx(210 / 300)
    assert groups["Y"].summary.denominator == 100 + 100 + 150 + 500


def test_wilson_arrays_equal_scalar() -> None:
    x, n = np.array([0, 3, 50, 99]), np.array([1, 10, 100, 99])
    for level in (0.95, 0.998):
        lo, hi = S.wilson_arrays(x, n, level)
        for i in range(4):
            ref = S.wilson_interval(int(x[i]), int(n[i]), level)
            assert (lo[i], hi[i]) == pytest.approx(ref, abs=1e-12)


def test_rounded_numerators_are_capped_in_the_pooled_trend_and_the_change_test() -> None:
    """docs/benchmarks-statistics.md: a numerator rounded above its denominator counts as the
    denominator in every sum, the peer group's pooled trend and the change test included."""
    over = Counts("A", 12, 10, "rounded", "rounded")
    pooled = S.pool([over, Counts("B", 5, 20)])
    assert (pooled.numerator, pooled.denominator) == (15, 30)  # not 17 of 30
    [change] = S.changes(
        [TrendPoint("2026-01", 1, over), TrendPoint("2026-02", 1, Counts("A", 5, 20))]
    )
    z_capped, _ = S.two_proportion_test(10, 10, 5, 20)
    assert change.z == pytest.approx(z_capped)
    z_uncapped, _ = S.two_proportion_test(12, 10, 5, 20)
    assert change.z != pytest.approx(z_uncapped)
