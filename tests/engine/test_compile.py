"""The shape of the generated SQL: one statement, shared features, literal SQL for explain."""

from __future__ import annotations

import sqlalchemy as sa
from engine_spec_helpers import D, E, catalogue, codelist, ev, indicator, load, patient, practice

from agent.engine import compile_sql, compute_cells
from agent.engine.features import LastDate, LatestValueOf, features_for
from protocol.catalogue import Age, HasCode, LatestValue, OnRegister, Window

CODES = [codelist("sbp", "200"), codelist("hyp", "10"), codelist("hypres", "19")]


def two_indicators():
    return catalogue(
        indicator(
            OnRegister(codelist="hyp", resolved="hypres"),
            LatestValue(codelist="sbp", window=Window(months=12), op="<=", value=140),
            ind_id="BP_A",
        ),
        indicator(
            Age(min=45),
            LatestValue(codelist="sbp", window=Window(months=60), op="<=", value=150),
            HasCode(codelist="hyp"),
            ind_id="BP_B",
        ),
        codelists=CODES,
    )


def test_features_are_shared_across_indicators_and_windows():
    cat = two_indicators()
    features = features_for(list(cat.indicators))
    # "latest sbp" once for two windows, "last hyp code" once for OnRegister and HasCode.
    assert sum(isinstance(f, LatestValueOf) for f in features) == 1
    assert sorted(f.codeset.codelists for f in features if isinstance(f, LastDate)) == [
        ("hyp",),
        ("hypres",),
    ]


def test_whole_catalogue_is_one_statement(tmp_path):
    cat = two_indicators()
    engine = sa.create_engine(f"duckdb:///{tmp_path}/p.duckdb")
    load(engine, practice([patient(1)], [ev(1, D(2024, 1, 1), "200", 130)]))
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    cells = compute_cells(engine, cat, E)
    assert len(statements) == 1
    assert statements[0].count("FROM events") == 1  # the events table is read once
    assert len(cells) == 2 * 10


def test_compile_sql_is_literal_and_runs(tmp_path):
    cat = two_indicators()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/p.sqlite")
    load(
        engine,
        practice(
            [patient(1), patient(2, sex="M", born=D(1990, 1, 1))],
            [
                ev(1, D(2015, 1, 1), "10"),
                ev(1, D(2024, 1, 1), "200", 130),
                ev(2, D(2015, 1, 1), "10"),
            ],
        ),
    )
    sql = compile_sql(engine, cat, "BP_A", E)
    assert "'2023-03-31'" in sql  # the window start, bound inline
    assert "'2024-03-31'" in sql
    assert "?" not in sql
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql).all()
    # (band, sex, denominator, numerator, exclusions) per group
    assert sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows) == [
        ("18-64", "F", 1, 1, 0),
        ("18-64", "M", 1, 0, 0),
    ]
    # Only BP_A is compiled: BP_B's age bound (45 on E: born by 1979-03-31) is absent.
    assert "'1979-03-31'" not in sql
    assert "'1979-03-31'" in compile_sql(engine, cat, "BP_B", E)
