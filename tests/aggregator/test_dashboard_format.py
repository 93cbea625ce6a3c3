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


def test_whole_points_are_shown_without_a_decimal() -> None:
    """A practice's own view gets pooled rates to whole points: shown so."""
    assert (pct(0.61, 0), pts(-0.01, 0), pts(-0.004, 0), pts(0.02, 0)) == (
        "61%", "-1 pts", "+0 pts", "+2 pts")  # fmt: skip


def test_rates_as_percentages() -> None:
    assert pct(None) == "–"
    assert pct(0.8) == "80.0%"
    assert pct(0.12345, 2) == "12.35%"


def test_trend_period_labels_do_not_overlap() -> None:
    """A year of months on the trend chart: its period labels are at least 60 px apart, the
    first month is labelled, and six months are each labelled."""
    import re

    from aggregator.web.dashboard.charts import trend_svg

    def labels(n: int) -> list[tuple[float, str]]:
        series = [{"period": {"label": f"2026-{m:02d}"}, "rate": 0.5, "abc": 0.6}
                  for m in range(1, n + 1)]  # fmt: skip
        found = re.findall(
            r'<text x="([\d.]+)" y="\d+" text-anchor="middle">([^<]*)<', trend_svg(series)
        )
        return [(float(x), text) for x, text in found]

    year = labels(12)
    xs = [x for x, _ in year]
    assert year[0][1] == "2026-01" and len(year) >= 5
    assert all(b - a >= 60 for a, b in zip(xs, xs[1:], strict=False))
    assert [t for _, t in labels(6)] == [f"2026-{m:02d}" for m in range(1, 7)]


def test_peers_drawn_at_one_band_position_are_spread_to_be_pointed_at() -> None:
    from aggregator.web.dashboard.charts import SPREAD_MAX, _spread

    peers = [{"id": f"P-{c}", "x": 500, "denominator": None, "rate": 0.5} for c in "EDCBA"]
    own = {"id": "A81001", "x": None, "denominator": 480, "rate": 0.6}
    out = _spread([*peers, own])
    assert "A81001" not in out  # a practice drawn at its own denominator stays there
    xs = [out[f"P-{c}"] for c in "ABCDE"]  # in pseudonym order, evenly, around the position
    assert xs == sorted(xs) and len(set(xs)) == 5 and abs(sum(xs)) < 1e-9
    many = _spread([{"id": f"P-{i:02d}", "x": 500} for i in range(40)])
    assert max(abs(v) for v in many.values()) <= SPREAD_MAX + 1e-9


def test_a_sparkline_never_bridges_a_month_without_a_rate() -> None:
    import re

    from aggregator.web.dashboard.charts import sparkline_svg

    svg = sparkline_svg([0.5, 0.52, None, None, 0.6, 0.61, None, 0.7])
    assert len(re.findall(r"<polyline", svg)) == 2 and len(re.findall(r"<circle", svg)) == 1
    # a change of one point does not fill the height: scaled to at least 10 points
    flat = sparkline_svg([0.50, 0.51])
    ys = [float(y) for y in re.findall(r",([\d.]+)", flat)]
    assert abs(ys[0] - ys[1]) < 26 * 0.2
    # no month with a rate (all withheld): words, not an empty box
    none = sparkline_svg([None, None, None])
    assert "no rate in any month</text>" in none and "<polyline" not in none
    # a page of a past month draws no later month: it says "up to" that month (a new-user run
    # read "no rate in any month" in 2025-12 of an indicator with a rate in 2026-11)
    past = sparkline_svg([None], label="DM_BP trend", upto="2025-12")
    assert "no rate up to 2025-12</text>" in past and "in any month</text>" not in past
    assert "<title>DM_BP trend: no rate in any month up to 2025-12</title>" in past


def test_a_practice_in_the_trend_legend_with_no_rate_says_so() -> None:
    """The legend names the practice; where it has no rate in any month (every one withheld)
    the chart says so under its name rather than drawing nothing (a new-user run)."""
    from aggregator.web.dashboard.charts import trend_svg

    series = [{"period": {"label": f"2026-0{m}"}, "rate": 0.5, "abc": 0.6} for m in (1, 2)]
    none = [{"period": {"label": f"2026-0{m}"}, "rate": None} for m in (1, 2)]
    withheld = trend_svg(series, practice=none, practice_label="Vale Surgery")
    assert ">Vale Surgery</text>" in withheld and "no rate in any month</text>" in withheld
    some = [{"period": {"label": "2026-01"}, "rate": 0.4}, none[1]]
    drawn = trend_svg(series, practice=some, practice_label="Vale Surgery")
    assert 'class="practice-pt"' in drawn and "no rate in any month" not in drawn


def test_a_long_name_in_the_trend_legend_is_cut_with_an_ellipsis_and_whole_in_its_tooltip() -> None:
    from aggregator.web.dashboard.charts import trend_svg

    series = [{"period": {"label": "2026-01"}, "rate": 0.5, "abc": 0.6}]
    own = [{"period": {"label": "2026-01"}, "rate": 0.4}]
    svg = trend_svg(series, practice=own, practice_label="Tannery Medical Centre")
    assert "<title>Tannery Medical Centre</title>Tannery Medical C…</text>" in svg
    assert ">Network</text>" in svg  # a short name as it is
