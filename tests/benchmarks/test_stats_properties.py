"""Properties of the funnel over random networks (hypothesis; derandomised and modest by
default, FEDQI_LONG=1 for many more)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.benchmarks import stats as S

EXAMPLES = 1000 if os.environ.get("FEDQI_LONG") == "1" else 40

count_status = st.sampled_from(["exact", "rounded", "suppressed"])


@st.composite
def networks(draw: st.DrawFn) -> list[S.Counts]:
    out = []
    for i in range(draw(st.integers(1, 25))):
        n = draw(st.integers(0, 3000))
        x = draw(st.integers(0, n))
        ns, ds = draw(count_status), draw(count_status)
        out.append(
            S.Counts(
                f"P{i}",
                None if ns == "suppressed" else x,
                None if ds == "suppressed" else n,
                ns if ns != "exact" or x else "zero",
                ds if ds != "exact" or n else "zero",
            )
        )
    return out


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(
    networks(), st.sampled_from(["auto", "exact", "normal", "wilson", "multiplicative", "additive"])
)
def test_funnel_invariants(cells: list[S.Counts], method: str) -> None:
    f = S.funnel(cells, method=method)  # type: ignore[arg-type]
    usable = [c for c in cells if c.usable]
    s = f.summary
    assert s.included == len(usable) and s.practices == len(cells)
    assert s.numerator == sum(min(c.numerator or 0, c.denominator or 0) for c in usable)
    assert s.denominator == sum(c.denominator or 0 for c in usable)
    if s.denominator:
        assert s.pooled == s.numerator / s.denominator
        rates = [c.rate for c in usable]
        assert min(rates) - 1e-12 <= s.median <= max(rates) + 1e-12  # type: ignore[operator]
        assert s.abc is not None and 0 <= s.abc <= 1
    else:
        assert s.pooled is None and s.abc is None
    for r in f.practices:
        if r.status == "suppressed" or r.rate is None:
            assert r.band is None and r.ci95 is None
            continue
        lim = r.limits
        assert lim is not None
        assert (
            0 <= lim.low_998 <= lim.low_95 + 1e-12
            and lim.high_95 <= lim.high_998 + 1e-12 <= 1 + 1e-12
        )
        assert r.band == S.band_of(r.rate, lim)
        assert r.ci95 is not None and r.ci998 is not None
        assert (
            r.ci998[0] - 1e-12 <= r.ci95[0] <= r.rate + 1e-12
            and r.rate - 1e-12 <= r.ci95[1] <= r.ci998[1] + 1e-12
        )


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(st.floats(0.01, 0.99), st.integers(1, 5000), st.sampled_from([0.001, 0.025, 0.975, 0.999]))
def test_exact_limit_interpolates_between_the_bracketing_counts(
    p0: float, n: int, p: float
) -> None:
    # The limit lies between (r - 1)/n and r/n, where r is the first count whose cumulative
    # probability reaches p; it moves towards r/n as F(r - 1) approaches p. (Interpolated limits
    # do not promise a tail of at most p: between attainable counts no limit can.)
    from scipy.stats import binom

    r = int(binom.ppf(p, n, p0))
    f_r, f_prev = binom.cdf(r, n, p0), binom.cdf(r - 1, n, p0)
    assert f_prev < p <= f_r + 1e-12
    lim = S.exact_limit(p0, n, p)
    assert (r - 1) / n - 1e-12 <= lim <= r / n + 1e-12
    expected = (r - (f_r - p) / (f_r - f_prev)) / n
    assert abs(lim - min(max(expected, 0.0), 1.0)) < 1e-12
