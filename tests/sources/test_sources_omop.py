"""OMOP CDM 5.4 read in place: hand-made CDM rows with known canonical rows in every code
mode, the database left untouched, and a clear error for a database that is not OMOP."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.errors import SourceError
from agent.sources import schema
from agent.sources.export import omop_metadata
from agent.sources.omop import BeforeBirth, open_omop, records_before_birth

D = dt.date
EHR = 32817

CONCEPTS = [
    # (concept_id, vocabulary_id, concept_code)
    (320128, "SNOMED", "59621000"),  # essential hypertension
    (3004410, "LOINC", "4548-4"),  # HbA1c %
    (3004249, "LOINC", "8480-6"),  # systolic BP
    (1545958, "RxNorm", "617318"),  # an atorvastatin product
    (35000001, "dm+d", "42381911000001105"),  # source concept: simvastatin 10mg (dm+d)
    (45591453, "ICD10", "I10"),
    (44814653, "Read", "G20.."),  # a vocabulary fedqi does not read
]


def _ins(conn: sa.Connection, insert: Any, rows: list[dict[str, Any]]) -> None:
    keys = {k for r in rows for k in r}
    conn.execute(insert, [{k: r.get(k) for k in keys} for r in rows])


def _omop_db(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    md = omop_metadata()
    t = md.tables
    with engine.begin() as conn:
        md.create_all(conn)
        _ins(conn,
            t["person"].insert(),
            [
                {"person_id": 1, "gender_concept_id": 8507, "year_of_birth": 1950,
                 "month_of_birth": 3, "day_of_birth": 4, "race_concept_id": 0,
                 "ethnicity_concept_id": 0, "person_source_value": "NHS-A"},
                {"person_id": 2, "gender_concept_id": 8532, "year_of_birth": 1960,
                 "race_concept_id": 0, "ethnicity_concept_id": 0},
                {"person_id": 3, "gender_concept_id": 0, "year_of_birth": 2001,
                 "month_of_birth": 12, "day_of_birth": 31, "race_concept_id": 0,
                 "ethnicity_concept_id": 0},
                {"person_id": 4, "gender_concept_id": 8507, "year_of_birth": 1999,
                 "race_concept_id": 0, "ethnicity_concept_id": 0},  # no observation period
            ],
        )  # fmt: skip
        _ins(conn,
            t["observation_period"].insert(),
            [
                {"observation_period_id": 1, "person_id": 1, "observation_period_start_date": D(1990, 1, 1),
                 "observation_period_end_date": D(2000, 1, 1), "period_type_concept_id": EHR},
                {"observation_period_id": 2, "person_id": 1, "observation_period_start_date": D(2005, 1, 1),
                 "observation_period_end_date": D(2024, 12, 31), "period_type_concept_id": EHR},
                {"observation_period_id": 3, "person_id": 2, "observation_period_start_date": D(2010, 1, 1),
                 "observation_period_end_date": D(2099, 12, 31), "period_type_concept_id": EHR},
                {"observation_period_id": 4, "person_id": 3, "observation_period_start_date": D(2002, 1, 1),
                 "observation_period_end_date": D(2099, 12, 31), "period_type_concept_id": EHR},
            ],
        )  # fmt: skip
        _ins(conn, t["death"].insert(), [{"person_id": 3, "death_date": D(2024, 6, 30)}])
        _ins(conn,
            t["condition_occurrence"].insert(),
            [
                {"condition_occurrence_id": 1, "person_id": 1, "condition_concept_id": 320128,
                 "condition_start_date": D(2010, 4, 5), "condition_type_concept_id": EHR,
                 "condition_source_value": "I10", "condition_source_concept_id": 45591453},
                {"condition_occurrence_id": 2, "person_id": 2, "condition_concept_id": 0,
                 "condition_start_date": D(2011, 1, 1), "condition_type_concept_id": EHR,
                 "condition_source_value": "G20..", "condition_source_concept_id": 44814653},
            ],
        )  # fmt: skip
        _ins(conn,
            t["measurement"].insert(),
            [
                {"measurement_id": 1, "person_id": 2, "measurement_concept_id": 3004410,
                 "measurement_date": D(2024, 2, 1), "measurement_type_concept_id": EHR,
                 "value_as_number": 7.0, "unit_source_value": "%",
                 "measurement_source_value": "HbA1c", "measurement_source_concept_id": 0},
                {"measurement_id": 2, "person_id": 1, "measurement_concept_id": 3004249,
                 "measurement_date": D(2024, 3, 1), "measurement_type_concept_id": EHR,
                 "value_as_number": 150.0, "unit_source_value": "mm[Hg]",
                 "measurement_source_value": "SBP", "measurement_source_concept_id": 3004249},
            ],
        )  # fmt: skip
        _ins(conn,
            t["drug_exposure"].insert(),
            [
                {"drug_exposure_id": 1, "person_id": 1, "drug_concept_id": 1545958,
                 "drug_exposure_start_date": D(2024, 1, 2), "drug_exposure_end_date": D(2024, 2, 2),
                 "drug_type_concept_id": EHR, "drug_source_value": "42381911000001105",
                 "drug_source_concept_id": 35000001},
            ],
        )  # fmt: skip
        _ins(conn,
            t["concept"].insert(),
            [
                {"concept_id": cid, "concept_name": code, "domain_id": "x", "vocabulary_id": v,
                 "concept_class_id": "x", "concept_code": code, "valid_start_date": D(1970, 1, 1),
                 "valid_end_date": D(2099, 12, 31)}
                for cid, v, code in CONCEPTS
            ],
        )  # fmt: skip
    engine.dispose()
    return engine


def _canonical(engine: sa.Engine) -> dict[str, Any]:
    def norm(v: Any) -> Any:
        if isinstance(v, str) and len(v) == 10 and v[4] == "-":
            return dt.date.fromisoformat(v)
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, float | int) and not isinstance(v, bool):
            return float(v)
        return v

    with engine.connect() as conn:
        return {
            name: sorted(
                (tuple(norm(v) for v in row) for row in conn.execute(sa.select(table))),
                key=lambda r: tuple(str(v) for v in r),
            )
            for name, table in schema.TABLES.items()
        }


PATIENTS = sorted(
    [
        (1.0, "NHS-A", D(1950, 3, 4), "M", D(2005, 1, 1), D(2025, 1, 1), None),
        (2.0, None, D(1960, 1, 1), "F", D(2010, 1, 1), D(2100, 1, 1), None),
        (3.0, None, D(2001, 12, 31), "U", D(2002, 1, 1), D(2100, 1, 1), D(2024, 6, 30)),
    ],
    key=lambda r: tuple(str(v) for v in r),
)


@pytest.fixture
def omop_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'omop.sqlite'}"
    _omop_db(url)
    return url


def _events(rows: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    return {(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows}


def test_standard_mode_known_rows(omop_sqlite: str) -> None:
    engine = open_omop(omop_sqlite, codes="standard")
    got = _canonical(engine)
    assert got["patients"] == PATIENTS
    assert _events(got["events"]) == {
        (1, D(2010, 4, 5), "omop", "320128", None, None),
        (1, D(2010, 4, 5), "snomedct", "59621000", None, None),
        (2, D(2024, 2, 1), "omop", "3004410", 7.0, "%"),
        # 7.0 % NGSP as IFCC mmol/mol
        (2, D(2024, 2, 1), "loinc", "4548-4", 53.0, "mmol/mol"),
        (1, D(2024, 3, 1), "omop", "3004249", 150.0, "mm[Hg]"),
        (1, D(2024, 3, 1), "loinc", "8480-6", 150.0, "mm[Hg]"),
    }
    assert {(int(r[0]), r[1], r[2], r[3]) for r in got["medications"]} == {
        (1, D(2024, 1, 2), "omop", "1545958"),
        (1, D(2024, 1, 2), "rxnorm", "617318"),
    }
    engine.dispose()


def test_source_mode_reads_source_concepts(omop_sqlite: str) -> None:
    engine = open_omop(omop_sqlite, codes="source")
    got = _canonical(engine)
    coded = {(int(r[0]), r[2], r[3]) for r in got["events"] if r[2] != "omop"}
    # I10 (ICD-10) for the hypertension; Read codes are not read; measurement 1 has no source
    # concept; measurement 2's source concept is the LOINC one.
    assert coded == {(1, "icd10", "I10"), (1, "loinc", "8480-6")}
    meds = {(r[2], r[3]) for r in got["medications"] if r[2] != "omop"}
    assert meds == {("dmd", "42381911000001105")}
    engine.dispose()


def test_concept_id_and_source_value_modes(omop_sqlite: str) -> None:
    engine = open_omop(omop_sqlite, codes="concept_id")
    got = _canonical(engine)
    assert {r[2] for r in got["events"]} == {"omop"}
    assert len(got["events"]) == 3  # the unmapped (concept 0) condition is left out
    engine.dispose()
    engine = open_omop(omop_sqlite, codes="source_value", source_system="snomedct")
    got = _canonical(engine)
    values = {r[3] for r in got["events"] if r[2] == "snomedct"}
    assert values == {"I10", "G20..", "HbA1c", "SBP"}
    engine.dispose()


def test_reading_changes_nothing_in_the_omop_database(tmp_path: Path, omop_sqlite: str) -> None:
    from agent.engine import compute_cells
    from agent.library import load_default_catalogue

    path = tmp_path / "omop.sqlite"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    tables_before = sa.inspect(sa.create_engine(omop_sqlite)).get_table_names()
    engine = open_omop(omop_sqlite)
    cells = compute_cells(engine, load_default_catalogue(), D(2024, 3, 31))
    assert cells
    engine.dispose()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    plain = sa.create_engine(omop_sqlite)
    assert sa.inspect(plain).get_table_names() == tables_before
    assert not sa.inspect(plain).get_view_names()


def test_not_an_omop_database_is_named(tmp_path: Path) -> None:
    """A database without the CDM tables is an error naming it (its file, for SQLite) and the
    tables it lacks."""
    path = tmp_path / "x.sqlite"
    url = f"sqlite:///{path}"
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE person (person_id integer)")
    with pytest.raises(SourceError) as err:
        open_omop(url)
    assert f"omop source {path}: the database has no table observation_period, " in str(err.value)


def test_unknown_code_mode(omop_sqlite: str) -> None:
    with pytest.raises(SourceError, match="omop codes 'vocab'"):
        open_omop(omop_sqlite, codes="vocab")


def test_duckdb_omop_gives_the_same_rows(tmp_path: Path, omop_sqlite: str) -> None:
    url = f"duckdb:///{tmp_path / 'omop.duckdb'}"
    _omop_db(url)
    sqlite_engine, duck_engine = open_omop(omop_sqlite), open_omop(url)
    assert _canonical(duck_engine) == _canonical(sqlite_engine)
    sqlite_engine.dispose()
    duck_engine.dispose()


@pytest.mark.postgres
def test_postgresql_omop_gives_the_same_rows(pg_database_factory: Any, omop_sqlite: str) -> None:
    url = pg_database_factory()
    _omop_db(url)
    sqlite_engine, pg_engine = open_omop(omop_sqlite), open_omop(url)
    assert _canonical(pg_engine) == _canonical(sqlite_engine)
    sqlite_engine.dispose()
    pg_engine.dispose()


def _add_values(url: str, values: list[float]) -> None:
    engine = sa.create_engine(url)
    t = omop_metadata().tables["measurement"]
    with engine.begin() as conn:
        conn.execute(
            t.insert(),
            [
                {"measurement_id": 100 + i, "person_id": 1, "measurement_concept_id": 3004249,
                 "measurement_date": D(2024, 4, 1), "measurement_type_concept_id": EHR,
                 "value_as_number": v, "unit_source_value": "mm[Hg]",
                 "measurement_source_concept_id": 0}
                for i, v in enumerate(values)
            ],
        )  # fmt: skip
    engine.dispose()


def _refused(url: str, n: int) -> None:
    with pytest.raises(SourceError) as err:
        open_omop(url)
    message = str(err.value)
    assert f"measurement.value_as_number holds {n} row(s) that are not finite numbers" in message
    assert "observation" not in message  # only the table that holds them is named
    # no value or person is named (outside the source's own path, which pytest numbers: its
    # "pytest-150" directory once held the value 150)
    told = message.replace(url.split(":///", 1)[-1], "<source>")
    assert "150" not in told and "NHS-A" not in told


def test_infinite_value_is_refused(omop_sqlite: str) -> None:
    # SQLite stores infinity (a NaN becomes NULL, so cannot reach the views there).
    _add_values(omop_sqlite, [float("inf"), float("-inf"), float("nan")])
    _refused(omop_sqlite, 2)


def test_duckdb_nan_value_is_refused(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'omop.duckdb'}"
    _omop_db(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a DOUBLE column, as an OMOP database of its own may have
        conn.exec_driver_sql("ALTER TABLE measurement ALTER value_as_number TYPE DOUBLE")
    engine.dispose()
    open_omop(url).dispose()  # finite values: read
    _add_values(url, [float("nan")])
    _refused(url, 1)


@pytest.mark.postgres
def test_postgresql_nan_and_infinity_are_refused(pg_database_factory: Any) -> None:
    url = pg_database_factory()
    _omop_db(url)
    open_omop(url).dispose()
    _add_values(url, [float("nan"), float("inf")])
    _refused(url, 2)


@pytest.mark.parametrize("backend", ["sqlite", "duckdb"])
def test_a_missing_omop_file_is_named_and_not_created(tmp_path: Path, backend: str) -> None:
    path = tmp_path / f"nothere.{backend}"
    with pytest.raises(SourceError, match=f"omop source {path}: no such file"):
        open_omop(f"{backend}:///{path}")
    assert not path.exists()  # SQLite and DuckDB would create an empty database
    assert list(tmp_path.iterdir()) == []


def test_an_omop_source_that_is_not_a_url_asks_for_one(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        open_omop("nothere2.sqlite")
    message = str(err.value)
    assert "'nothere2.sqlite': not a database URL; an SQLAlchemy URL is expected" in message
    assert "e.g. sqlite:///omop.sqlite" in message and "Could not parse" not in message
    with pytest.raises(SourceError, match="'postgresql://u@h:abc/omop': not a database URL"):
        open_omop("postgresql://u@h:abc/omop")  # a port that is no number: no traceback


@pytest.mark.parametrize("backend", ["sqlite", "duckdb"])
def test_an_omop_file_is_opened_read_only(tmp_path: Path, backend: str) -> None:
    url = f"{backend}:///{tmp_path / 'omop db'}.{backend}"  # a space: quoted in SQLite's URI
    _omop_db(url)
    engine = open_omop(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM patients").scalar() == 3
        with pytest.raises(sa.exc.DBAPIError, match="(?i)read.?only"):
            conn.exec_driver_sql("CREATE TABLE written (x INTEGER)")
    engine.dispose()


def _add_before_birth(url: str) -> None:
    """Rows dated before their person's birth in every table the check reads but the valued
    ones, beside rows on the first day the birth can be (which are not)."""
    engine = sa.create_engine(url)
    t = omop_metadata().tables
    with engine.begin() as conn:
        _ins(conn,
            t["condition_occurrence"].insert(),
            [
                # person 1, born 1950-03-04: the day before, and on the birth date (fine)
                {"condition_occurrence_id": 10, "person_id": 1, "condition_concept_id": 320128,
                 "condition_start_date": D(1950, 3, 3), "condition_type_concept_id": EHR},
                {"condition_occurrence_id": 11, "person_id": 1, "condition_concept_id": 320128,
                 "condition_start_date": D(1950, 3, 4), "condition_type_concept_id": EHR},
                # unmapped (concept 0, left out of the views) but impossible all the same
                {"condition_occurrence_id": 12, "person_id": 1, "condition_concept_id": 0,
                 "condition_start_date": D(1949, 1, 1), "condition_type_concept_id": EHR},
                # person 2, born in 1960 (no month or day): its first day is not before birth
                {"condition_occurrence_id": 13, "person_id": 2, "condition_concept_id": 320128,
                 "condition_start_date": D(1960, 1, 1), "condition_type_concept_id": EHR},
            ],
        )  # fmt: skip
        _ins(conn,
            t["drug_exposure"].insert(),
            [
                {"drug_exposure_id": 10, "person_id": 2, "drug_concept_id": 1545958,
                 "drug_exposure_start_date": D(1959, 12, 31),
                 "drug_exposure_end_date": D(1960, 1, 31), "drug_type_concept_id": EHR},
            ],
        )  # fmt: skip
        _ins(conn,
            t["observation_period"].insert(),
            [  # person 3, born 2001-12-31: an earlier period starting the day before
                {"observation_period_id": 10, "person_id": 3,
                 "observation_period_start_date": D(2001, 12, 30),
                 "observation_period_end_date": D(2001, 12, 31), "period_type_concept_id": EHR},
            ],
        )  # fmt: skip
        _ins(conn, t["death"].insert(), [{"person_id": 2, "death_date": D(1959, 6, 1)}])
    engine.dispose()


def _omop_url(backend: str, tmp_path: Path, pg_database_factory: Any) -> str:
    if backend == "postgresql":
        return str(pg_database_factory())
    return f"{backend}:///{tmp_path / 'omop'}.{backend}"


BACKENDS = ["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_before_birth_are_counted_per_table_and_refused(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """As load-csv and load-fhir refuse a record dated before its patient's birth, open_omop
    (preview, submit) refuses an OMOP database holding one, naming each table, its date column
    and how many rows of how many persons, never a person, a row or a date; a row on the first
    day the birth can be is not before it. check-source opens it (refuse_before_birth=False)."""
    factory = request.getfixturevalue("pg_database_factory") if backend == "postgresql" else None
    url = _omop_url(backend, tmp_path, factory)
    _omop_db(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert set(records_before_birth(conn).values()) == {BeforeBirth(rows=0, persons=0)}
    engine.dispose()
    open_omop(url).dispose()  # nothing before birth: read

    _add_before_birth(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert records_before_birth(conn) == {
            "condition_occurrence": BeforeBirth(rows=2, persons=1),
            "measurement": BeforeBirth(rows=0, persons=0),
            "observation": BeforeBirth(rows=0, persons=0),
            "drug_exposure": BeforeBirth(rows=1, persons=1),
            "observation_period": BeforeBirth(rows=1, persons=1),
            "death": BeforeBirth(rows=1, persons=1),
        }
    engine.dispose()
    with pytest.raises(SourceError) as err:
        open_omop(url)
    message = str(err.value)
    assert (
        "rows dated before their person's birth (year_of_birth, month_of_birth, day_of_birth): "
        in message
    )
    assert (
        "condition_occurrence.condition_start_date 2 row(s) of 1 person(s); "
        "drug_exposure.drug_exposure_start_date 1 row(s) of 1 person(s); "
        "observation_period.observation_period_start_date 1 row(s) of 1 person(s); "
        "death.death_date 1 row(s) of 1 person(s). A record cannot precede the patient's birth"
    ) in message
    assert "measurement" not in message and "observation_date" not in message
    for value in ("1950-03-0", "1949-01-01", "1959-", "2001-12-3", "NHS-A", "person_id"):
        assert value not in message  # no date and no person
    assert len(message.splitlines()) == 1

    engine = open_omop(url, refuse_before_birth=False)  # check-source's way in: it counts them
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM patients").scalar() == 3
    engine.dispose()


def test_records_before_birth_reads_each_table_once_where_nothing_is_wrong(
    omop_sqlite: str,
) -> None:
    """The check is on every preview's path: where no row is before birth it is one statement
    (each table grouped once by person); rows are counted only in a table that has some."""
    engine = sa.create_engine(omop_sqlite)
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if "condition_occurrence" in statement or "drug_exposure" in statement:
            statements.append(statement)

    with engine.connect() as conn:
        records_before_birth(conn)
    assert len(statements) == 1
    engine.dispose()
    _add_before_birth(omop_sqlite)
    statements.clear()
    with engine.connect() as conn:
        records_before_birth(conn)
    # the grouped statement, then one count of rows in each table that has some
    assert len(statements) == 3
    engine.dispose()
