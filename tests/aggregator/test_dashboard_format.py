"""The dashboard's number formats: a change that rounds to nothing is not shown as a fall."""

from __future__ import annotations

import pytest

from aggregator.web.dashboard.charts import pct, pts


@pytest.mark.parametrize(
    ("difference", "shown"),
    [
        (None, "–"),
        (0.0, "+0.0 pts"),
        (-0.0, "+0.0 pts"),
        (-0.0003, "+0.0 pts"),  # -0.03 points: rounds to nothing, "-0.0" would read as a fall
        (0.0004, "+0.0 pts"),
        (-0.0006, "-0.1 pts"),
        (0.675, "+67.5 pts"),
        (-0.062, "-6.2 pts"),
    ],
)
def test_points_are_signed_and_never_minus_zero(difference: float | None, shown: str) -> None:
    assert pts(difference) == shown


def test_rates_as_percentages() -> None:
    assert pct(None) == "–"
    assert pct(0.8) == "80.0%"
    assert pct(0.12345, 2) == "12.35%"
