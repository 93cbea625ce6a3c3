"""The base population (registered and alive on E) and age at E."""

from __future__ import annotations

from engine_spec_helpers import BANDS, D, E, catalogue, cell, indicator, patient, practice, total

from protocol.catalogue import Age, AgeBand, RegisteredFor, SexIs

EVERYONE = catalogue(indicator(Age(min=0), SexIs(values=("F",))))


def test_registered_on_period_end(runner):
    p = practice(
        [
            patient(1, start=E),  # registered on E: in
            patient(2, start=D(2024, 4, 1)),  # registers after E: out
            patient(3, end=E),  # registration ends on E (first day not registered): out
            patient(4, end=D(2024, 4, 1)),  # leaves the day after E: in
            patient(5, died=E),  # died on E: out
            patient(6, died=D(2024, 4, 1)),  # died after E: in
            patient(7, end=D(2010, 1, 1)),  # left long ago: out
        ]
    )
    assert total(runner.compute(p, EVERYONE, E)) == (3, 3, 0)


def test_patient_born_after_period_end_is_not_in_the_base(runner):
    p = practice([patient(1, born=D(2024, 4, 1), start=D(2024, 1, 1)), patient(2)])
    assert total(runner.compute(p, EVERYONE, E)) == (1, 1, 0)


def test_age_birthday_on_period_end_counts(runner):
    cat = catalogue(indicator(Age(min=18), Age(max=64)))
    p = practice(
        [
            patient(1, born=D(2006, 3, 31)),  # 18 on E: in
            patient(2, born=D(2006, 4, 1)),  # 18 the day after E: out
            patient(3, born=D(1959, 3, 31)),  # 65 on E: in population, not numerator
            patient(4, born=D(1959, 4, 1)),  # 64 on E
        ]
    )
    assert total(runner.compute(p, cat, E)) == (3, 2, 0)


def test_age_29_february_birthday_is_reached_on_1_march(runner):
    cat = catalogue(indicator(Age(min=0), Age(min=18)))
    p = practice([patient(1, born=D(2004, 2, 29), start=D(2010, 1, 1))])
    assert total(runner.compute(p, cat, D(2022, 2, 28))) == (1, 0, 0)
    assert total(runner.compute(p, cat, D(2022, 3, 1))) == (1, 1, 0)
    assert total(runner.compute(p, cat, D(2024, 2, 29))) == (1, 1, 0)
    assert cell(runner.compute(p, cat, D(2022, 2, 28)), "0-17", "F") == (1, 0, 0)
    assert cell(runner.compute(p, cat, D(2022, 3, 1)), "18-64", "F") == (1, 1, 0)


def test_age_on_a_leap_day_period_end(runner):
    # E = 29 Feb 2024: someone born 28 Feb 2006 is 18, born 1 March 2006 is 17.
    cat = catalogue(indicator(Age(min=0), Age(min=18)))
    p = practice([patient(1, born=D(2006, 2, 28)), patient(2, born=D(2006, 3, 1))])
    assert total(runner.compute(p, cat, D(2024, 2, 29))) == (2, 1, 0)


def test_age_bands_follow_age_at_period_end(runner):
    p = practice(
        [
            patient(1, born=D(2006, 4, 1)),  # 17
            patient(2, born=D(2006, 3, 31)),  # 18
            patient(3, born=D(1959, 4, 1)),  # 64
            patient(4, born=D(1959, 3, 31)),  # 65
            patient(5, born=E),  # 0, born on E
        ]
    )
    cells = runner.compute(p, EVERYONE, E)
    assert cell(cells, "0-17", "F") == (2, 2, 0)
    assert cell(cells, "18-64", "F") == (2, 2, 0)
    assert cell(cells, "65+", "F") == (1, 1, 0)
    assert BANDS[-1].max is None


def test_registered_for_months(runner):
    cat = catalogue(indicator(Age(min=0), RegisteredFor(months=3)))
    p = practice(
        [
            patient(1, start=D(2023, 12, 31)),  # exactly 3 months before E: in
            patient(2, start=D(2024, 1, 1)),  # one day short: out
        ]
    )
    assert total(runner.compute(p, cat, E)) == (2, 1, 0)
    # 31 May 2024 - 3 months = 29 Feb 2024
    p2 = practice([patient(1, start=D(2024, 2, 29)), patient(2, start=D(2024, 3, 1))])
    assert total(runner.compute(p2, cat, D(2024, 5, 31))) == (2, 1, 0)


def test_single_band_catalogue(runner):
    cat = catalogue(
        indicator(Age(min=0), SexIs(values=("M",))), bands=(AgeBand(label="0+", min=0),)
    )
    p = practice([patient(1, sex="M"), patient(2, sex="F", born=D(2020, 1, 1))])
    cells = runner.compute(p, cat, E)
    assert cell(cells, "0+", "M") == (1, 1, 0)
    assert cell(cells, "0+", "F") == (1, 0, 0)
