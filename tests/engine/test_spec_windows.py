"""Windows: ``E - N months < date <= E``, month-end clipping, rows after E ignored."""

from __future__ import annotations

from engine_spec_helpers import D, E, catalogue, codelist, ev, indicator, patient, practice, total

from protocol.catalogue import Age, HasCode, Window

CODES = [codelist("bp", "100")]


def has_bp(months: int | None) -> object:
    return catalogue(
        indicator(
            Age(min=0),
            HasCode(codelist="bp", window=Window(months=months) if months else None),
        ),
        codelists=CODES,
    )


def one_event_each(dates):
    return practice(
        [patient(i) for i in range(1, len(dates) + 1)],
        [ev(i, d, "100") for i, d in enumerate(dates, start=1)],
    )


def test_window_start_is_exclusive_end_inclusive(runner):
    p = one_event_each([D(2023, 3, 31), D(2023, 4, 1), D(2024, 3, 31), D(2024, 4, 1)])
    # 2023-03-31 is the (excluded) start, 2024-04-01 is after E.
    assert total(runner.compute(p, has_bp(12), E)) == (4, 2, 0)


def test_window_start_clips_to_leap_month_end(runner):
    # 31 March 2024 - 1 month = 29 February 2024 (excluded); 1 March is in.
    p = one_event_each([D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 1)])
    assert total(runner.compute(p, has_bp(1), E)) == (3, 1, 0)


def test_window_start_clips_to_common_year_february(runner):
    # 31 March 2023 - 1 month = 28 February 2023 (excluded).
    p = one_event_each([D(2023, 2, 27), D(2023, 2, 28), D(2023, 3, 1)])
    assert total(runner.compute(p, has_bp(1), D(2023, 3, 31))) == (3, 1, 0)


def test_window_from_leap_day_end(runner):
    # 29 February 2024 - 12 months = 28 February 2023.
    p = one_event_each([D(2023, 2, 28), D(2023, 3, 1), D(2024, 2, 29), D(2024, 3, 1)])
    assert total(runner.compute(p, has_bp(12), D(2024, 2, 29))) == (4, 2, 0)


def test_window_keeps_day_of_month(runner):
    # 15 May 2024 - 3 months = 15 February 2024.
    p = one_event_each([D(2024, 2, 15), D(2024, 2, 16), D(2024, 5, 15)])
    assert total(runner.compute(p, has_bp(3), D(2024, 5, 15))) == (3, 2, 0)


def test_no_window_means_any_date_up_to_period_end(runner):
    p = one_event_each([D(1980, 1, 1), D(2024, 3, 31), D(2024, 4, 1), D(2030, 1, 1)])
    assert total(runner.compute(p, has_bp(None), E)) == (4, 2, 0)


def test_codes_of_other_systems_do_not_match(runner):
    p = practice(
        [patient(1), patient(2)],
        [ev(1, D(2024, 1, 1), "100", system="dmd"), ev(2, D(2024, 1, 1), "100")],
    )
    assert total(runner.compute(p, has_bp(12), E)) == (2, 1, 0)
