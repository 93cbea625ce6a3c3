"""What docs/benchmarks-statistics.md says the statistics do, shown on the code: exact limits
clipped to [0, 1], rounded numerators capped at their denominator in every sum, and the `wilson`
limit option equal to `normal`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as sps

from aggregator.benchmarks.stats import (
    Counts,
    exact_limit,
    exact_limits,
    funnel,
    limits_for,
    normal_limits,
    wilson_limits,
    z_for,
)


def test_exact_lower_limit_below_zero_is_clipped_to_zero() -> None:
    n, p0, prob = 1, 0.01, 0.025
    dist = sps.binom(n, p0)
    r = float(dist.ppf(prob))
    alpha = (float(dist.cdf(r)) - prob) / float(dist.cdf(r))
    unclipped = (r - alpha) / n
    assert r == 0 and unclipped == pytest.approx(-0.974747, abs=1e-6)  # the doc's -0.975
    assert exact_limit(p0, n, prob) == 0.0
    assert exact_limits(p0, np.array([n]), prob).tolist() == [0.0]
    # Every exact limit, for any p0, n and level, is within [0, 1].
    for p in (0.001, 0.3, 0.999):
        for q in (0.001, 0.025, 0.975, 0.999):
            values = exact_limits(p, np.arange(1, 200), q)
            assert values.min() >= 0.0 and values.max() <= 1.0


def test_a_rounded_numerator_above_its_denominator_is_capped_in_every_sum() -> None:
    cells = [
        Counts("A", 12, 10, "rounded", "rounded"),  # 12 of 10: counts as 10 of 10
        Counts("B", 5, 20),
        Counts("C", 9, 30),
    ]
    summary = funnel(cells).summary
    assert summary.numerator == 10 + 5 + 9 and summary.denominator == 60
    assert summary.pooled == pytest.approx(24 / 60)
    assert cells[0].rate == 1.0
    assert summary.abc is not None and summary.abc <= 1.0


def test_wilson_limits_equal_normal_limits() -> None:
    n = np.array([1, 2, 5, 10, 37, 100, 1_000, 110_000])
    worst = 0.0
    for p0 in (0.01, 0.1, 0.3, 0.5, 0.80642448, 0.99):
        for level in (0.95, 0.998):
            z, high = z_for(level), 1 - (1 - level) / 2
            worst = max(
                worst,
                float(np.abs(wilson_limits(p0, n, high, "low") - normal_limits(p0, n, -z)).max()),
                float(np.abs(wilson_limits(p0, n, high, "high") - normal_limits(p0, n, z)).max()),
            )
    assert worst < 1e-12
    # ... and through the option the API and the dashboard take.
    summary = funnel([Counts("A", 30, 100), Counts("B", 50, 120), Counts("C", 3, 9)]).summary
    ns = np.array([5, 50, 500])
    for w, m in zip(
        limits_for(summary, ns, "wilson"), limits_for(summary, ns, "normal"), strict=True
    ):
        assert np.allclose(
            [w.low_95, w.high_95, w.low_998, w.high_998],
            [m.low_95, m.high_95, m.low_998, m.high_998],
            rtol=0,
            atol=1e-12,
        )
