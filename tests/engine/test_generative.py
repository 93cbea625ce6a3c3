"""Generative: random practices and random rule trees; every SQL engine == the reference.

Small and derandomised by default; ``FEDQI_LONG=1`` runs many more examples.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from engine_spec_helpers import load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import StaticPool

from agent.engine import compute_cells, compute_periods, reference, worklist_patients
from agent.engine.dates import months_before
from agent.engine.reference import Patient, Practice, Row
from protocol.catalogue import (
    Age,
    AgeBand,
    All,
    Any_,
    Catalogue,
    DisclosurePolicy,
    FirstCode,
    HasCode,
    Indicator,
    LatestCode,
    LatestValue,
    Not,
    OnRegister,
    RegisteredFor,
    Score,
    ScoreTerm,
    SexIs,
    Window,
)
from tests.catalogue_helpers import make_codelist

LONG = os.environ.get("FEDQI_LONG") == "1"
EXAMPLES = 1500 if LONG else 40

PERIOD_ENDS = [
    dt.date(2024, 3, 31),
    dt.date(2024, 2, 29),
    dt.date(2023, 2, 28),
    dt.date(2024, 6, 15),
]
MONTHS = [1, 3, 12]
VALUES = [120.0, 140.0, 150.0]

# A small code pool, so codelists overlap and rows hit several of them.
SNOMED = ["c1", "c2", "c3", "c4", "c5"]
DMD = ["d1", "d2"]
CODELISTS = {
    "k_one": [("snomedct", "c1"), ("snomedct", "c2")],
    "k_two": [("snomedct", "c2"), ("snomedct", "c3")],
    "k_three": [("snomedct", "c4")],
    "k_four": [("snomedct", "c1"), ("snomedct", "c4"), ("snomedct", "c5")],
    "k_five": [("snomedct", "c5"), ("dmd", "d1")],
    "m_one": [("dmd", "d1")],
    "m_two": [("dmd", "d1"), ("dmd", "d2")],
}
BANDS = (
    AgeBand(label="0-17", min=0, max=17),
    AgeBand(label="18-64", min=18, max=64),
    AgeBand(label="65-79", min=65, max=79),
    AgeBand(label="80+", min=80),
)


def interesting_dates(end: dt.date) -> list[dt.date]:
    out = [end, end + dt.timedelta(days=1)]
    for m in MONTHS:
        start = months_before(end, m)
        out += [start, start + dt.timedelta(days=1), start - dt.timedelta(days=1)]
    return out


@st.composite
def dates_near(draw: st.DrawFn, end: dt.date, years_back: int = 3) -> dt.date:
    if draw(st.booleans()):
        return draw(st.sampled_from(interesting_dates(end)))
    return draw(
        st.dates(
            min_value=end - dt.timedelta(days=365 * years_back),
            max_value=end + dt.timedelta(days=60),
        )
    )


@st.composite
def birth_dates(draw: st.DrawFn, end: dt.date) -> dt.date:
    if draw(st.booleans()):
        # On or next to a band edge birthday (and 29 February births).
        years = draw(st.sampled_from([0, 17, 18, 64, 65, 79, 80, 20]))
        edge = months_before(end, 12 * years)
        return edge + dt.timedelta(days=draw(st.sampled_from([-1, 0, 1])))
    if draw(st.integers(0, 9)) == 0:
        return dt.date(draw(st.sampled_from([1944, 1960, 2004, 2008, 2020])), 2, 29)
    return draw(st.dates(min_value=dt.date(1925, 1, 1), max_value=end + dt.timedelta(days=30)))


@st.composite
def practices(draw: st.DrawFn, end: dt.date) -> Practice:
    n = draw(st.integers(0, 14))
    patients, events, meds = [], [], []
    for pid in range(1, n + 1):
        start = draw(st.one_of(dates_near(end, 5), st.just(dt.date(2000, 1, 1))))
        leaves = draw(st.one_of(st.none(), dates_near(end, 2)))
        died = draw(st.one_of(st.none(), st.none(), dates_near(end, 1)))
        patients.append(
            Patient(
                patient_id=pid * 7 + 3,
                birth_date=draw(birth_dates(end)),
                sex=draw(st.sampled_from(["F", "M", "U"])),
                registration_start=start,
                registration_end=leaves,
                death_date=died,
                local_ref=f"r{pid}",
            )
        )
        for _ in range(draw(st.integers(0, 7))):
            system, code = draw(
                st.sampled_from([("snomedct", c) for c in SNOMED] + [("dmd", c) for c in DMD])
            )
            value = draw(st.one_of(st.none(), st.sampled_from(VALUES + [139.5])))
            events.append((pid * 7 + 3, Row(draw(dates_near(end)), system, code, value)))
        for _ in range(draw(st.integers(0, 2))):
            meds.append(
                (pid * 7 + 3, Row(draw(dates_near(end)), "dmd", draw(st.sampled_from(DMD))))
            )
    return Practice.build(patients, events, meds)


windows = st.one_of(st.none(), st.sampled_from(MONTHS).map(lambda m: Window(months=m)))
codelist_ids = st.sampled_from(sorted(CODELISTS))


@st.composite
def ages(draw: st.DrawFn) -> Age:
    lo = draw(st.one_of(st.none(), st.sampled_from([0, 17, 18, 65, 80])))
    hi = draw(st.one_of(st.none(), st.sampled_from([17, 64, 79, 100])))
    if lo is None and hi is None:
        lo = 18
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return Age(min=lo, max=hi)


leaves = st.one_of(
    ages(),
    st.lists(st.sampled_from(["F", "M", "U"]), min_size=1, max_size=3, unique=True).map(
        lambda v: SexIs(values=tuple(v))
    ),
    st.sampled_from(MONTHS + [24]).map(lambda m: RegisteredFor(months=m)),
    st.builds(
        HasCode,
        codelist=codelist_ids,
        table=st.sampled_from(["events", "medications"]),
        window=windows,
    ),
    st.builds(OnRegister, codelist=codelist_ids, resolved=st.one_of(st.none(), codelist_ids)),
    st.builds(
        LatestValue,
        codelist=codelist_ids,
        window=windows,
        op=st.sampled_from(["<", "<=", ">", ">=", "=="]),
        value=st.sampled_from(VALUES),
    ),
    st.builds(LatestCode, family=codelist_ids, codelist=codelist_ids, window=windows),
    st.builds(
        FirstCode,
        codelist=codelist_ids,
        window=st.sampled_from(MONTHS).map(lambda m: Window(months=m)),
    ),
)

rules = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda c: All(of=tuple(c))),
        st.lists(children, min_size=1, max_size=3).map(lambda c: Any_(of=tuple(c))),
        children.map(lambda c: Not(rule=c)),
        # A weighted score of sub-rules against a threshold (how AF_ANTICOAG computes
        # CHA2DS2-VASc); thresholds around the possible sums, ties included.
        st.builds(
            Score,
            terms=st.lists(
                st.builds(ScoreTerm, weight=st.integers(1, 3), rule=children),
                min_size=1,
                max_size=4,
            ).map(tuple),
            op=st.sampled_from(["<", "<=", ">", ">=", "=="]),
            value=st.integers(0, 6),
        ),
    ),
    max_leaves=6,
)


@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    indicators = []
    for i in range(draw(st.integers(1, 3))):
        indicators.append(
            Indicator(
                id=f"G{i}",
                version=1,
                title="generated",
                rationale="generated",
                population=draw(rules),
                numerator=draw(rules),
                exclusions=draw(st.one_of(st.none(), rules)),
                strata=draw(st.sampled_from([("age_band", "sex"), ("sex",), ("age_band",), ()])),
            )
        )
    return Catalogue(
        id="generated",
        version=1,
        title="generated",
        age_bands=BANDS,
        disclosure=DisclosurePolicy(name="generated"),
        codelists=tuple(make_codelist(cl, pairs) for cl, pairs in CODELISTS.items()),
        indicators=tuple(indicators),
    )


@pytest.fixture(scope="module", params=["sqlite", "duckdb", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """One database per engine for the module; each example empties it first."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        name = f"g_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.schema.CreateSchema(name))
        engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={name}"})
        yield engine
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()
    else:
        engine = sa.create_engine(f"{request.param}:///:memory:", poolclass=StaticPool)
        yield engine
        engine.dispose()


def reload(engine: sa.Engine, practice: Practice) -> None:
    from agent.sources import schema

    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        for table in ("patients", "events", "medications"):
            conn.execute(schema.TABLES[table].delete())
    load(engine, practice)


@settings(
    max_examples=EXAMPLES,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sql_engine_matches_reference(db: sa.Engine, data: st.DataObject) -> None:
    end = data.draw(st.sampled_from(PERIOD_ENDS), label="period_end")
    catalogue = data.draw(catalogues(), label="catalogue")
    practice = data.draw(practices(end), label="practice")
    reload(db, practice)
    expected = reference.evaluate(practice, catalogue, end)
    assert compute_cells(db, catalogue, end) == expected
    first = catalogue.indicators[0].id
    assert worklist_patients(db, catalogue, first, end) == reference.worklist(
        practice, catalogue, first, end
    )


@settings(
    max_examples=EXAMPLES,
    derandomize=not LONG,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@pytest.mark.parametrize("method", ["changes", "sql"])
def test_one_pass_over_many_period_ends_matches_each_period_and_the_reference(
    db: sa.Engine, method: str, data: st.DataObject
) -> None:
    """A backfill in one pass (``compute_periods``, both methods: each patient's changes of
    state as bit masks, and every (patient, period end) in SQL) gives, for every period end,
    the cells of ``compute_cells`` on that end alone and of the reference evaluator."""
    last = data.draw(st.sampled_from(PERIOD_ENDS), label="last period end")
    count = data.draw(st.integers(1, 14), label="months")
    # month ends going back from the last: different days of month, a February, a year turn
    ends = sorted({months_before(last, m) for m in range(count)})
    catalogue = data.draw(catalogues(), label="catalogue")
    practice = data.draw(practices(last), label="practice")
    reload(db, practice)
    together = compute_periods(db, catalogue, ends, method=method)  # type: ignore[arg-type]
    assert sorted(together) == ends
    for end in ends:
        expected = reference.evaluate(practice, catalogue, end)
        assert together[end] == expected, end
        assert compute_cells(db, catalogue, end) == expected, end
