"""Latest value: the latest valued row in the window decides; same-day ties: lowest wins."""

from __future__ import annotations

import pytest
from engine_spec_helpers import D, E, catalogue, codelist, ev, indicator, patient, practice, total

from protocol.catalogue import Age, LatestValue, Window

CODES = [codelist("sbp", "200", "201")]


def bp_at_most(value: float = 140, op: str = "<=", months: int | None = 12):
    return catalogue(
        indicator(
            Age(min=0),
            LatestValue(
                codelist="sbp",
                window=Window(months=months) if months else None,
                op=op,
                value=value,
            ),
        ),
        codelists=CODES,
    )


def test_latest_reading_decides(runner):
    p = practice(
        [patient(1), patient(2)],
        [
            ev(1, D(2023, 6, 1), "200", 130),
            ev(1, D(2023, 9, 1), "200", 150),  # latest: fails
            ev(2, D(2023, 6, 1), "200", 150),
            ev(2, D(2023, 9, 1), "201", 130),  # latest (other code of the list): passes
        ],
    )
    assert total(runner.compute(p, bp_at_most(), E)) == (2, 1, 0)


def test_same_day_readings_lowest_wins(runner):
    p = practice(
        [patient(1)],
        [ev(1, D(2024, 1, 1), "200", 150), ev(1, D(2024, 1, 1), "201", 130)],
    )
    assert total(runner.compute(p, bp_at_most(140, "<="), E)) == (1, 1, 0)
    assert total(runner.compute(p, bp_at_most(140, ">"), E)) == (1, 0, 0)
    assert total(runner.compute(p, bp_at_most(130, "=="), E)) == (1, 1, 0)


def test_rows_without_value_are_ignored(runner):
    p = practice(
        [patient(1), patient(2)],
        [
            ev(1, D(2024, 1, 1), "200"),  # coded but no value: no reading
            ev(2, D(2023, 6, 1), "200", 120),
            ev(2, D(2024, 1, 1), "200"),  # a later value-less row does not hide the reading
        ],
    )
    assert total(runner.compute(p, bp_at_most(), E)) == (2, 1, 0)


def test_latest_reading_outside_window_is_no_reading(runner):
    p = practice(
        [patient(1), patient(2)],
        [
            ev(1, D(2023, 3, 31), "200", 120),  # on the exclusive window start
            ev(2, D(2023, 4, 1), "200", 120),  # first day in
            ev(2, D(2024, 4, 1), "200", 170),  # after E: ignored
        ],
    )
    assert total(runner.compute(p, bp_at_most(), E)) == (2, 1, 0)


def test_latest_value_without_window(runner):
    p = practice([patient(1)], [ev(1, D(1999, 1, 1), "200", 120)])
    assert total(runner.compute(p, bp_at_most(months=None), E)) == (1, 1, 0)


@pytest.mark.parametrize(
    ("op", "expected"),
    [("<", 0), ("<=", 1), (">", 0), (">=", 1), ("==", 1)],
)
def test_comparisons_at_the_boundary(runner, op, expected):
    p = practice([patient(1)], [ev(1, D(2024, 1, 1), "200", 140.0)])
    assert total(runner.compute(p, bp_at_most(140, op), E)) == (1, expected, 0)


def test_fractional_and_negative_values(runner):
    p = practice(
        [patient(1), patient(2)],
        [ev(1, D(2024, 1, 1), "200", 58.5), ev(2, D(2024, 1, 1), "200", -3.25)],
    )
    assert total(runner.compute(p, bp_at_most(58.4, "<="), E)) == (2, 1, 0)
