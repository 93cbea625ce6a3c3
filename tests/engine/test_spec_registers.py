"""On register (resolved codes), latest code and first code."""

from __future__ import annotations

from engine_spec_helpers import D, E, catalogue, codelist, ev, indicator, patient, practice, total

from protocol.catalogue import Age, FirstCode, LatestCode, OnRegister, Window

REG = [codelist("hyp", "10", "11"), codelist("hypres", "19")]


def on_register(resolved: str | None = "hypres"):
    return catalogue(
        indicator(Age(min=0), OnRegister(codelist="hyp", resolved=resolved)), codelists=REG
    )


def test_resolution_after_diagnosis_cancels(runner):
    p = practice(
        [patient(1), patient(2), patient(3)],
        [
            ev(1, D(2010, 1, 1), "10"),
            ev(2, D(2010, 1, 1), "10"),
            ev(2, D(2015, 1, 1), "19"),  # resolved later: off
            ev(3, D(2015, 1, 1), "19"),  # resolved without a diagnosis: off
        ],
    )
    assert total(runner.compute(p, on_register(), E)) == (3, 1, 0)


def test_same_day_resolution_resolves(runner):
    p = practice([patient(1)], [ev(1, D(2015, 1, 1), "10"), ev(1, D(2015, 1, 1), "19")])
    assert total(runner.compute(p, on_register(), E)) == (1, 0, 0)


def test_rediagnosis_after_resolution_is_on_register(runner):
    p = practice(
        [patient(1)],
        [ev(1, D(2010, 1, 1), "10"), ev(1, D(2012, 1, 1), "19"), ev(1, D(2016, 5, 5), "11")],
    )
    assert total(runner.compute(p, on_register(), E)) == (1, 1, 0)


def test_rows_after_period_end_are_ignored_by_registers(runner):
    p = practice(
        [patient(1), patient(2)],
        [
            ev(1, D(2010, 1, 1), "10"),
            ev(1, D(2024, 4, 1), "19"),  # resolution after E: still on at E
            ev(2, D(2024, 4, 1), "10"),  # diagnosed after E: not on at E
        ],
    )
    assert total(runner.compute(p, on_register(), E)) == (2, 1, 0)


def test_register_without_resolved_codelist(runner):
    p = practice([patient(1), patient(2)], [ev(1, D(2010, 1, 1), "10"), ev(2, D(2011, 1, 1), "19")])
    assert total(runner.compute(p, on_register(None), E)) == (2, 1, 0)


SMOK = [codelist("smok", "30", "31", "32"), codelist("smoker", "31")]


def latest_smoker(months: int | None = None):
    return catalogue(
        indicator(
            Age(min=0),
            LatestCode(
                family="smok", codelist="smoker", window=Window(months=months) if months else None
            ),
        ),
        codelists=SMOK,
    )


def test_latest_code_of_the_family_decides(runner):
    p = practice(
        [patient(1), patient(2), patient(3), patient(4)],
        [
            ev(1, D(2020, 1, 1), "30"),
            ev(1, D(2022, 1, 1), "31"),  # latest is smoker: true
            ev(2, D(2020, 1, 1), "31"),
            ev(2, D(2022, 1, 1), "32"),  # latest is not smoker: false
            ev(3, D(2022, 1, 1), "30"),
            ev(3, D(2022, 1, 1), "31"),  # same day, one is smoker: true
            ev(4, D(2020, 1, 1), "31"),
            ev(4, D(2024, 4, 1), "30"),  # after E: ignored, latest is smoker
        ],
    )
    assert total(runner.compute(p, latest_smoker(), E)) == (4, 3, 0)


def test_latest_code_window(runner):
    p = practice(
        [patient(1), patient(2)],
        [ev(1, D(2023, 3, 31), "31"), ev(2, D(2023, 4, 1), "31")],
    )
    assert total(runner.compute(p, latest_smoker(12), E)) == (2, 1, 0)


def test_latest_code_with_disjoint_target_is_never_true(runner):
    cat = catalogue(
        indicator(Age(min=0), LatestCode(family="smok", codelist="other")),
        codelists=[codelist("smok", "30"), codelist("other", "99")],
    )
    p = practice([patient(1)], [ev(1, D(2020, 1, 1), "30"), ev(1, D(2020, 1, 1), "99")])
    assert total(runner.compute(p, cat, E)) == (1, 0, 0)


def test_first_code_in_window(runner):
    cat = catalogue(
        indicator(Age(min=0), FirstCode(codelist="hyp", window=Window(months=9))), codelists=REG
    )
    p = practice(
        [patient(1), patient(2), patient(3), patient(4)],
        [
            ev(1, D(2023, 7, 1), "10"),  # first in the last 9 months: true
            ev(2, D(2023, 6, 30), "10"),  # on the exclusive start (31 Mar - 9 months = 30 Jun)
            ev(2, D(2024, 1, 1), "11"),
            ev(3, D(2020, 1, 1), "11"),  # diagnosed long ago
            ev(3, D(2024, 1, 1), "10"),
            ev(4, D(2024, 4, 1), "10"),  # after E only: no first code
        ],
    )
    assert total(runner.compute(p, cat, E)) == (4, 1, 0)
