"""Rule order (achievers first), Not/Any/All, medications, several indicators, worklists."""

from __future__ import annotations

import pytest
from engine_spec_helpers import (
    D,
    E,
    catalogue,
    codelist,
    ev,
    indicator,
    med,
    patient,
    practice,
    total,
)

from agent.engine import compute_cells
from agent.errors import AgentUserError
from protocol.catalogue import Age, All, Any_, HasCode, Not, Score, ScoreTerm, SexIs, Window

CODES = [codelist("aa", "1"), codelist("bb", "2"), codelist("xx", "9")]
Y = Window(months=12)


def test_exclusions_never_remove_achievers(runner):
    cat = catalogue(
        indicator(Age(min=0), HasCode(codelist="aa", window=Y), HasCode(codelist="xx", window=Y)),
        codelists=CODES,
    )
    p = practice(
        [patient(1), patient(2), patient(3), patient(4)],
        [
            ev(1, D(2024, 1, 1), "1"),
            ev(1, D(2024, 1, 1), "9"),  # achieves and excluded: stays an achiever
            ev(2, D(2024, 1, 1), "9"),  # excluded
            ev(3, D(2024, 1, 1), "1"),  # achieves
        ],
    )
    # denominator = 4 - 1 excluded; numerator 2; exclusions 1
    assert total(runner.compute(p, cat, E)) == (3, 2, 1)


def test_exclusion_counts_only_the_population(runner):
    cat = catalogue(
        indicator(SexIs(values=("F",)), HasCode(codelist="aa"), HasCode(codelist="xx")),
        codelists=CODES,
    )
    p = practice(
        [patient(1, sex="M"), patient(2)],
        [ev(1, D(2024, 1, 1), "9"), ev(2, D(2024, 1, 1), "9")],
    )
    assert total(runner.compute(p, cat, E)) == (0, 0, 1)


def test_not_any_all_truth_table(runner):
    a, b = HasCode(codelist="aa"), HasCode(codelist="bb")
    cats = {
        "AND": All(of=(a, b)),
        "OR": Any_(of=(a, b)),
        "NAND": Not(rule=All(of=(a, b))),
        "XOR": All(of=(Any_(of=(a, b)), Not(rule=All(of=(a, b))))),
        "NOTA_B": All(of=(Not(rule=a), b)),
        "NONE": Not(rule=Any_(of=(a, b))),
        "NOTNOT": Not(rule=Not(rule=a)),
    }
    cat = catalogue(
        *(indicator(Age(min=0), rule, ind_id=name) for name, rule in cats.items()),
        codelists=CODES,
    )
    # patients: neither, a only, b only, both
    p = practice(
        [patient(1), patient(2), patient(3), patient(4)],
        [ev(2, D(2020, 1, 1), "1"), ev(3, D(2020, 1, 1), "2")]
        + [ev(4, D(2020, 1, 1), "1"), ev(4, D(2020, 1, 1), "2")],
    )
    cells = runner.compute(p, cat, E)
    expected = {"AND": 1, "OR": 3, "NAND": 3, "XOR": 2, "NOTA_B": 1, "NONE": 1, "NOTNOT": 2}
    for name, numerator in expected.items():
        assert total(cells, name) == (4, numerator, 0), name


def test_not_of_a_windowed_code_is_true_without_rows(runner):
    # Null-safe negation: no rows at all must make Not(HasCode) true, not unknown.
    cat = catalogue(
        indicator(Age(min=0), Not(rule=HasCode(codelist="aa", window=Y))), codelists=CODES
    )
    p = practice([patient(1), patient(2)], [ev(2, D(2024, 1, 1), "1")])
    assert total(runner.compute(p, cat, E)) == (2, 1, 0)


def test_medications_table(runner):
    cat = catalogue(
        indicator(Age(min=0), HasCode(codelist="statin", table="medications", window=Y)),
        codelists=[codelist("statin", "3201", system="dmd")],
    )
    p = practice(
        [patient(1), patient(2), patient(3), patient(4)],
        events=[ev(2, D(2024, 1, 1), "3201", system="dmd")],  # an event, not an issue
        medications=[
            med(1, D(2024, 1, 1), "3201"),
            med(3, D(2023, 3, 31), "3201"),  # on the exclusive start
            med(4, D(2024, 1, 1), "3201", system="snomedct"),  # other system
        ],
    )
    assert total(runner.compute(p, cat, E)) == (4, 1, 0)


def test_several_indicators_and_selection(runner):
    cat = catalogue(
        indicator(Age(min=0), HasCode(codelist="aa"), ind_id="ONE"),
        indicator(Age(min=18), HasCode(codelist="bb"), ind_id="TWO"),
        codelists=CODES,
    )
    p = practice(
        [patient(1), patient(2, born=D(2010, 1, 1))],
        [ev(1, D(2020, 1, 1), "1"), ev(2, D(2020, 1, 1), "2")],
    )
    cells = runner.compute(p, cat, E)
    assert total(cells, "ONE") == (2, 1, 0)
    assert total(cells, "TWO") == (1, 0, 0)
    only = runner.compute(p, cat, E, ["TWO"])
    assert {c.indicator for c in only} == {"TWO"}
    assert total(only, "TWO") == (1, 0, 0)


def test_worklist_is_denominator_not_numerator(runner):
    cat = catalogue(
        indicator(Age(min=0), HasCode(codelist="aa", window=Y), HasCode(codelist="xx", window=Y)),
        codelists=CODES,
    )
    p = practice(
        [patient(1), patient(2), patient(3), patient(4, end=D(2020, 1, 1))],
        [ev(1, D(2024, 1, 1), "1"), ev(2, D(2024, 1, 1), "9")],
    )
    assert runner.worklist(p, cat, "TT", E) == [(3, "ref3")]


def test_unknown_indicator_is_a_user_error(tmp_path):
    cat = catalogue(indicator(Age(min=0), HasCode(codelist="aa")), codelists=CODES)
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path}/x.sqlite")
    with pytest.raises(AgentUserError, match="unknown indicator NOPE"):
        compute_cells(engine, cat, E, ["NOPE"])


@pytest.mark.parametrize(
    ("op", "value", "expected_numerator"),
    # Patients score 0, 1, 2, 3 and 4 (weights 2 for aa, 1 for bb, 1 for female).
    [(">=", 2, 3), (">", 2, 2), ("==", 2, 1), ("<", 1, 1), ("<=", 4, 5), (">=", 5, 0)],
)
def test_score_sums_weights_of_the_terms_that_hold(runner, op, value, expected_numerator):
    score = Score(
        terms=(
            ScoreTerm(weight=2, rule=HasCode(codelist="aa")),
            ScoreTerm(weight=1, rule=HasCode(codelist="bb", window=Y)),
            ScoreTerm(weight=1, rule=SexIs(values=("F",))),
        ),
        op=op,
        value=value,
    )
    cat = catalogue(indicator(Age(min=0), score), codelists=CODES)
    p = practice(
        [
            patient(1, sex="M"),  # 0
            patient(2, sex="F"),  # 1
            patient(3, sex="M"),  # aa: 2
            patient(4, sex="F"),  # aa + F: 3 (bb outside the window does not count)
            patient(5, sex="F"),  # aa + bb + F: 4
        ],
        [
            ev(3, D(2010, 1, 1), "1"),
            ev(4, D(2010, 1, 1), "1"),
            ev(4, D(2020, 1, 1), "2"),
            ev(5, D(2010, 1, 1), "1"),
            ev(5, D(2024, 1, 1), "2"),
        ],
    )
    assert total(runner.compute(p, cat, E)) == (5, expected_numerator, 0)
