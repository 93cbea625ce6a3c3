"""check-source on a hand-made store with known answers, and the three commands end to end
through ``agent.cli.main`` (exit codes, one-line errors naming file and line)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sources_helpers import dump, write_csv, write_store

from agent.cli import main
from agent.sources.check import check_source
from agent.sources.common import open_store
from protocol.catalogue import Catalogue
from tests.catalogue_helpers import make_codelist
from tests.text_helpers import without_paths

D = dt.date


def _catalogue() -> Catalogue:
    return Catalogue.model_validate(
        {
            "id": "t",
            "version": 1,
            "title": "test",
            "age_bands": [{"label": "0+", "min": 0}],
            "disclosure": {"name": "default"},
            "codelists": [
                make_codelist(
                    "hyp", [("snomedct", "38341003"), ("snomedct", "59621000")]
                ).model_dump(mode="json"),
                make_codelist("statin", [("dmd", "111")]).model_dump(mode="json"),
            ],
            "indicators": [
                {
                    "id": "HYP001",
                    "version": 1,
                    "title": "t",
                    "rationale": "t",
                    "population": {"kind": "age", "min": 0},
                    "numerator": {"kind": "on_register", "codelist": "hyp"},
                },
                {
                    "id": "STAT",
                    "version": 1,
                    "title": "t",
                    "rationale": "t",
                    "population": {"kind": "age", "min": 0},
                    "numerator": {"kind": "has_code", "codelist": "statin", "table": "medications"},
                },
            ],
        }
    )


def _store(path: Path):
    p = {"local_ref": None, "death_date": None, "registration_end": None}
    return write_store(
        path,
        {
            "patients": [
                {**p, "patient_id": 1, "birth_date": D(1950, 1, 1), "sex": "F", "registration_start": D(2000, 1, 1)},
                {**p, "patient_id": 2, "birth_date": D(1960, 1, 1), "sex": "M", "registration_start": D(2000, 1, 1), "registration_end": D(2010, 1, 1)},
                {**p, "patient_id": 3, "birth_date": D(1970, 1, 1), "sex": "U", "registration_start": D(2000, 1, 1)},
            ],
            "events": [
                {"patient_id": 1, "date": D(2001, 2, 3), "system": "snomedct", "code": "38341003", "value": None, "unit": None},
                {"patient_id": 1, "date": D(2005, 2, 3), "system": "snomedct", "code": "38341003", "value": None, "unit": None},
                {"patient_id": 3, "date": D(2006, 2, 3), "system": "dmd", "code": "38341003", "value": None, "unit": None},
                {"patient_id": 1, "date": D(2002, 2, 3), "system": "snomedct", "code": "999", "value": None, "unit": None},
                {"patient_id": 2, "date": D(2003, 2, 3), "system": "snomedct", "code": "999", "value": None, "unit": None},
                {"patient_id": 3, "date": D(2024, 5, 6), "system": "loinc", "code": "8480-6", "value": 120.0, "unit": "mm[Hg]"},
            ],
            "medications": [
                {"patient_id": 3, "date": D(2020, 1, 1), "system": "rxnorm", "code": "314231"},
            ],
        },
    )  # fmt: skip


def test_check_source_known_answers(tmp_path: Path) -> None:
    result = check_source(_store(tmp_path / "s.sqlite"), _catalogue(), D(2025, 1, 1))
    assert result.patients == 3
    assert result.registered_now == 2
    assert result.tables["events"].rows == 6
    assert result.tables["events"].first_date == D(2001, 2, 3)
    assert result.tables["events"].last_date == D(2024, 5, 6)
    assert result.tables["events"].by_system == {"snomedct": 4, "dmd": 1, "loinc": 1}
    assert result.tables["medications"].rows == 1
    # Codes in the systems the lists use (snomedct, dmd) that match no list, most frequent
    # first; the hypertension code recorded under the dm+d system matches nothing.
    assert result.clinical_systems == ["dmd", "snomedct"]
    assert [(c.table, c.system, c.code, c.rows) for c in result.unused_codes] == [
        ("events", "snomedct", "999", 2),
        ("events", "dmd", "38341003", 1),
    ]
    assert result.other_systems == {"loinc": 1, "rxnorm": 1}
    cov = {c.id: c for c in result.codelists}
    # Patient 1 has two rows of one hyp code: one patient, one code seen, two rows.
    assert (cov["hyp"].patients, cov["hyp"].seen, cov["hyp"].codes, cov["hyp"].rows) == (1, 1, 2, 2)
    assert cov["hyp"].never_seen == ["snomedct:59621000"]
    assert (cov["statin"].patients, cov["statin"].seen) == (0, 0)
    assert cov["statin"].never_seen == ["dmd:111"]
    # Patient 2's registration ended in 2010, no death: gone from the list.
    assert result.period_end == D(2024, 12, 31) and result.left_without_death == 1
    text = "\n".join(result.lines())
    found, missing, todo = (
        text.index("WHAT WAS FOUND"),
        text.index("WHAT IS MISSING"),
        text.index("WHAT TO DO"),
    )
    assert found < missing < todo
    assert "3 patients in the records, 2 of them registered and alive today." in text[:missing]
    assert "1 patient's registration ends before 2024-12-31 with no death recorded" in text
    assert "No patient has any code of statin" in text[missing:todo]
    assert "2 different dmd or snomedct codes are recorded but are on no list" in text[missing:todo]
    assert "Rows in code systems no list uses (not counted): loinc 1 rows, rxnorm 1 rows" in text
    assert "- statin: if the practice records these" in text[todo:]
    assert "OMOP" not in text  # a store's registration is registration


def test_check_source_on_omop_counts_observation_periods_ending_without_death(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    from agent.sources.export import export_omop

    store = _store(tmp_path / "s.sqlite")
    omop = tmp_path / "omop.sqlite"
    target = sa.create_engine(f"sqlite:///{omop}")
    export_omop(store, target)  # patient 2's observation period ends 2009-12-31, no death
    store.dispose()
    target.dispose()
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    env = {"FEDQI_AGENT_HOME": str(tmp_path / "home")}
    args = ["check-source", "--omop", f"sqlite:///{omop}", "--catalogue", str(catalogue)]
    assert main([*args, "--json"], env) == 0
    assert json.loads(capsys.readouterr().out)["left_without_death"] == 1
    assert main(args, env) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 patient's observation period ends before" in text
    assert "OMOP: 1 of 3 persons' observation periods end before" in text
    assert "right for OMOP built from GP records" in text and "Synthea" in text


def test_check_source_on_omop_reports_records_before_birth_per_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OMOP database holding rows dated before their person's birth is reported, not
    refused (exit 0): per table, rows and persons, what preview and submit do with it and what
    to correct, with no row, person or date named; preview refuses it (exit 4)."""
    import sqlalchemy as sa

    from agent.sources.export import export_omop, omop_metadata

    store = _store(tmp_path / "s.sqlite")
    omop = tmp_path / "omop.sqlite"
    target = sa.create_engine(f"sqlite:///{omop}")
    export_omop(store, target)
    store.dispose()
    t = omop_metadata().tables
    with target.begin() as conn:  # patient 3, born 1970-01-01: two records in 1969
        for n, day in ((900, D(1969, 12, 31)), (901, D(1969, 5, 1))):
            conn.execute(
                t["condition_occurrence"].insert(),
                {"condition_occurrence_id": n, "person_id": 3, "condition_concept_id": 0,
                 "condition_start_date": day, "condition_type_concept_id": 32817},
            )  # fmt: skip
    target.dispose()
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    env = {"FEDQI_AGENT_HOME": str(tmp_path / "home")}
    args = ["check-source", "--omop", f"sqlite:///{omop}", "--catalogue", str(catalogue)]
    assert main([*args, "--json"], env) == 0
    found = json.loads(capsys.readouterr().out)["before_birth"]
    assert found["condition_occurrence"] == {"rows": 2, "persons": 1}
    assert {k for k, v in found.items() if v["rows"]} == {"condition_occurrence"}
    assert main(args, env) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "Rows dated before their person's birth, which cannot be: condition_occurrence 2 rows "
        "(1 person). Preview and submit refuse this database until they are corrected."
    ) in text
    assert "- OMOP: correct the 2 rows dated before their person's birth" in text
    assert "Nothing: the source looks ready" not in text
    assert "1969-12-31" not in text and "1969-05-01" not in text  # no date of theirs
    # The store it was exported from has none: counted, nothing to say.
    assert main(["check-source", "--db", str(tmp_path / "s.sqlite"), "--json", "--catalogue",
                 str(catalogue)], env) == 0  # fmt: skip
    found = json.loads(capsys.readouterr().out)["before_birth"]
    assert set(found) == {"events", "medications", "patients.registration_start",
                          "patients.death_date"}  # fmt: skip
    assert {k for k, v in found.items() if v != {"rows": 0, "persons": 0}} == set()

    (tmp_path / "home").mkdir(exist_ok=True)
    init = ["init", "--home", str(tmp_path / "home"), "--practice", "A81001", "--aud", "t",
            "--aggregator-url", "http://127.0.0.1:9", "--source-url", str(omop)]  # fmt: skip
    assert main(init, env) == 0
    capsys.readouterr()
    omop_env = {**env, "FEDQI_AGENT_SOURCE__KIND": "omop"}
    assert main(["check-source", "--catalogue", str(catalogue)], omop_env) == 0  # source.url
    assert "condition_occurrence 2 rows (1 person)" in capsys.readouterr().out
    code = main(["preview", "--period", "2024-12", "--local"], omop_env)
    out, err = capsys.readouterr()
    assert code == 4 and out == "" and err.count("\n") == 1, err
    assert "condition_occurrence.condition_start_date 2 row(s) of 1 person(s)." in err


def _store_before_birth(target: str | Path) -> sa.Engine:
    """A practice database in the canonical tables, as a practice might supply it (never
    loaded, so never checked): rows dated before their patient's birth in each dated table and
    column, beside rows on the birth date itself (which are not)."""
    p = {"local_ref": None, "death_date": None, "registration_end": None}
    ev = {"system": "snomedct", "code": "38341003", "value": None, "unit": None}
    return write_store(
        target,
        {
            "patients": [
                # 1, born 1950-03-04: an event the day before and one in 1949; one on the day
                {**p, "patient_id": 1, "local_ref": "NHS-A", "birth_date": D(1950, 3, 4), "sex": "F", "registration_start": D(2000, 1, 1)},
                # 2, born 1960-06-01: registered the day before, a death before birth
                {**p, "patient_id": 2, "birth_date": D(1960, 6, 1), "sex": "M", "registration_start": D(1960, 5, 31), "death_date": D(1959, 1, 2)},
                # 3, born 1970-01-01: a medication the day before
                {**p, "patient_id": 3, "birth_date": D(1970, 1, 1), "sex": "U", "registration_start": D(1970, 1, 1)},
            ],
            "events": [
                {**ev, "patient_id": 1, "date": D(1950, 3, 3)},
                {**ev, "patient_id": 1, "date": D(1949, 7, 8)},
                {**ev, "patient_id": 1, "date": D(1950, 3, 4)},
                {**ev, "patient_id": 3, "date": D(1970, 1, 1)},
            ],
            "medications": [
                {"patient_id": 3, "date": D(1969, 12, 31), "system": "dmd", "code": "111"},
                {"patient_id": 3, "date": D(1970, 1, 1), "system": "dmd", "code": "111"},
            ],
        },
    )  # fmt: skip


PRACTICE_BACKENDS = ["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", PRACTICE_BACKENDS)
def test_practice_records_before_birth_are_counted_per_table_and_refused(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A practice database in the canonical tables that the practice supplies itself is checked
    as an OMOP one is (load-csv and load-fhir refuse such a record): per dated table and
    column, rows and patients, never a patient, a row or a date; a row on the birth date is
    not before it. preview and submit refuse it (exit 4): open_source, and a DuckDB practice's
    stored statement (tests/agent, tests/engine)."""
    from agent.sources.birth import BeforeBirth, practice_before_birth, practice_error

    if backend == "postgresql":
        target: str | Path = request.getfixturevalue("pg_database_factory")()
    else:
        target = tmp_path / f"practice.{backend}"
    clean = _store(tmp_path / f"clean.{'duckdb' if backend == 'duckdb' else 'sqlite'}")
    with clean.connect() as conn:
        counts = practice_before_birth(conn)
    clean.dispose()
    assert set(counts.values()) == {BeforeBirth(rows=0, persons=0)}
    assert practice_error("x", counts) is None

    engine = _store_before_birth(target)
    with engine.connect() as conn:
        counts = practice_before_birth(conn)
    engine.dispose()
    assert counts == {
        "events": BeforeBirth(rows=2, persons=1),
        "medications": BeforeBirth(rows=1, persons=1),
        "patients.registration_start": BeforeBirth(rows=1, persons=1),
        "patients.death_date": BeforeBirth(rows=1, persons=1),
    }
    error = practice_error("practice.db", counts)
    assert error is not None and error.exit_code == 4
    assert str(error) == (
        "source.url: the practice database practice.db has rows dated before their patient's "
        "birth (patients.birth_date): events.date 2 row(s) of 1 person(s); medications.date 1 "
        "row(s) of 1 person(s); patients.registration_start 1 row(s) of 1 person(s); "
        "patients.death_date 1 row(s) of 1 person(s). A record cannot precede the patient's "
        "birth, so nothing is computed from this database until they are corrected in it "
        "(check-source counts them; docs/sources.md shows how to list them)"
    )


def _statements_of_the_check(engine: sa.Engine) -> list[str]:
    from agent.sources.birth import practice_before_birth

    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if "birth_date" in statement:
            statements.append(statement)

    with engine.connect() as conn:
        practice_before_birth(conn)
    engine.dispose()
    return statements


def test_practice_records_before_birth_is_one_statement_where_nothing_is_wrong(
    tmp_path: Path,
) -> None:
    """On every preview's path: where no row is before birth, one statement (each table
    grouped once by patient); rows are counted only for what has some."""
    assert len(_statements_of_the_check(_store(tmp_path / "clean.sqlite"))) == 1
    # the grouped statement, then one count of rows for each of the four that has some
    assert len(_statements_of_the_check(_store_before_birth(tmp_path / "p.sqlite"))) == 5


def test_check_source_on_a_practice_database_reports_records_before_birth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-source reports a practice database's rows dated before birth (exit 0), per table
    and column, with what preview and submit do and what to correct; no patient, no date."""
    store = tmp_path / "practice.sqlite"
    _store_before_birth(store).dispose()
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    env = {"FEDQI_AGENT_HOME": str(tmp_path / "home")}
    args = ["check-source", "--db", str(store), "--catalogue", str(catalogue)]
    assert main([*args, "--json"], env) == 0
    assert json.loads(capsys.readouterr().out)["before_birth"] == {
        "events": {"rows": 2, "persons": 1},
        "medications": {"rows": 1, "persons": 1},
        "patients.registration_start": {"rows": 1, "persons": 1},
        "patients.death_date": {"rows": 1, "persons": 1},
    }
    assert main(args, env) == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert (
        "Rows dated before their patient's birth, which cannot be: events 2 rows (1 person), "
        "medications 1 row (1 person), patients.registration_start 1 row (1 person), "
        "patients.death_date 1 row (1 person). Preview and submit refuse this database until "
        "they are corrected."
    ) in text
    assert "- Correct the 5 rows dated before their patient's birth (per table above)" in text
    assert "OMOP" not in text and "Nothing: the source looks ready" not in text
    # What it says of them names no date and no patient (the tables' date ranges above are
    # the practice's own first and last, as on any source).
    said = text[text.index("Rows dated before") : text.index("WHAT IS MISSING")]
    said += text[text.index("- Correct the") :]
    for value in ("1949", "1950-03-0", "1959", "1960-05", "1969", "NHS-A", "patient 1"):
        assert value not in said
    assert "NHS-A" not in out

    (tmp_path / "home").mkdir(exist_ok=True)
    init = ["init", "--home", str(tmp_path / "home"), "--practice", "A81001", "--aud", "t",
            "--aggregator-url", "http://127.0.0.1:9", "--source-url", str(store)]  # fmt: skip
    assert main(init, env) == 0
    capsys.readouterr()
    assert main(["check-source", "--catalogue", str(catalogue)], env) == 0  # source.url
    assert "events 2 rows (1 person)" in capsys.readouterr().out
    code = main(["preview", "--period", "2024-12", "--local"], env)
    out, err = capsys.readouterr()
    assert code == 4 and out == "" and err.count("\n") == 1, err
    assert f"source.url: the practice database {store} has rows dated before" in err
    assert "events.date 2 row(s) of 1 person(s);" in err


def test_check_source_names_a_date_column_not_as_iso_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A supplied SQLite practice whose events hold a date as 31/12/1999 (text, not ISO): one
    line naming events.date, how many rows and the form dates take, exit 4, never the value (a
    patient's date) and no traceback."""
    import sqlite3

    store = tmp_path / "practice.sqlite"
    _store(store).dispose()
    conn = sqlite3.connect(store)
    with conn:
        conn.execute("UPDATE events SET date = '31/12/1999' WHERE patient_id = 2")
    conn.close()
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    env = {"FEDQI_AGENT_HOME": str(tmp_path / "home")}
    code = main(["check-source", "--db", str(store), "--catalogue", str(catalogue)], env)
    out, err = capsys.readouterr()
    assert code == 4 and err.count("\n") == 1, err
    assert err.startswith(
        f"error: the practice database {store} has values not in the form docs/data-model.md "
        "gives them: events.date 1 row(s) empty or not a date as YYYY-MM-DD."
    ), err
    said = without_paths(err + out)  # the store's path aside, which pytest numbers
    assert "31/12" not in said and "1999" not in said and "Traceback" not in err


def test_cli_load_csv_then_check_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _extract(tmp_path, "1,04/03/1950,F,01/01/2000", "1,02/02/2024,38341003")
    home = tmp_path / "home"
    env = {"FEDQI_AGENT_HOME": str(home)}
    store = tmp_path / "practice.sqlite"
    code = main(["load-csv", str(d), "--into", str(store), "--date-format", "uk", "--json"], env)
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out)["patients"] == 1
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    code = main(["check-source", "--db", str(store), "--catalogue", str(catalogue), "--json"], env)
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["patients"] == 1
    assert {c["id"]: c["seen"] for c in result["codelists"]} == {"hyp": 1, "statin": 0}


def test_cli_bad_csv_is_one_line_and_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _extract(tmp_path, "1,1950-03-04,Q,2000-01-01")
    store = tmp_path / "practice.sqlite"
    code = main(["load-csv", str(d), "--into", str(store)], {"FEDQI_AGENT_HOME": str(tmp_path)})
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "patients.csv line 2, column sex: unknown sex code (use" in err
    assert "'Q'" not in err  # the patient's own value is never printed
    assert not store.exists()  # a store this load created is not left behind half-made


def test_cli_load_csv_row_before_birth_exits_4_and_keeps_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event dated 1975 for a patient born 1980 is refused (exit 4) and the store kept."""
    d = _extract(tmp_path, "7,1980-05-06,F,2000-01-01", "7,2001-01-01,38341003")
    store = tmp_path / "practice.sqlite"
    env = {"FEDQI_AGENT_HOME": str(tmp_path)}
    assert main(["load-csv", str(d), "--into", str(store)], env) == 0
    before = dump(open_store(store))
    write_csv(d, "events", "patient_id,date,code\n7,2001-01-01,38341003\n7,1975-01-01,38341003\n")
    capsys.readouterr()
    code = main(["load-csv", str(d), "--into", str(store)], env)
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith("error: ") and err.count("\n") == 1
    assert (
        "events.csv line 3, column date: before the birth_date of its patient (patients.csv line 2)"
    ) in err
    assert "1975" not in without_paths(err) and "1980" not in without_paths(err)
    assert dump(open_store(store)) == before


def test_cli_load_fhir_truncated_keeps_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    (bulk / "Patient.000.ndjson").write_text(
        '{"resourceType":"Patient","id":"a","birthDate":"1950-01-01"}\n{"resourceType":"Pat'
    )
    store = tmp_path / "practice.sqlite"
    d = _extract(tmp_path, "1,1950-03-04,F,2000-01-01")
    env = {"FEDQI_AGENT_HOME": str(tmp_path)}
    assert main(["load-csv", str(d), "--into", str(store)], env) == 0
    before = dump(open_store(store))
    code = main(["load-fhir", str(bulk), "--into", str(store)], env)
    err = capsys.readouterr().err
    assert code == 4
    assert "Patient.000.ndjson line 2: not valid JSON" in err
    assert dump(open_store(store)) == before


def test_cli_load_csv_with_an_unknown_date_format_is_a_bad_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "practice.sqlite"
    code = main(["load-csv", str(tmp_path), "--into", str(store), "--date-format", "us"],
                {"FEDQI_AGENT_HOME": str(tmp_path)})  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--date-format 'us': use iso or uk" in err  # exit 2: a bad argument
    assert not store.exists()


def _extract(tmp_path: Path, patient: str, event: str | None = None, name: str = "extract") -> Path:
    """A CSV extract of one patient (its patients.csv row), with one event row or none, and no
    medications."""
    d = tmp_path / name
    write_csv(d, "patients", f"patient_id,birth_date,sex,registration_start\n{patient}\n")
    write_csv(d, "events", "patient_id,date,code\n" + (f"{event}\n" if event else ""))
    write_csv(d, "medications", "patient_id,date,code\n")
    return d


def _bad_extract(tmp_path: Path) -> Path:
    """An extract whose only patient has an unknown sex code: every load of it fails."""
    return _extract(tmp_path, "1,1950-03-04,Q,2000-01-01", name="bad-extract")


def _truncated_bulk(tmp_path: Path) -> Path:
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    (bulk / "Patient.000.ndjson").write_text('{"resourceType":"Pat')
    return bulk


@pytest.mark.parametrize("command", ["load-csv", "load-fhir"])
@pytest.mark.parametrize(
    "into",
    ["sqlite:///new.db", "duckdb:///new.duckdb", "new.sqlite", "new.duckdb"],
)
def test_cli_failed_load_into_a_new_store_leaves_no_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    into: str,
) -> None:
    """A store the failed load itself created is deleted, whether --into names it by path or
    by URL (a URL's store was left behind, empty, and later read as "no such table")."""
    source = _bad_extract(tmp_path) if command == "load-csv" else _truncated_bulk(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the URLs and paths are relative, as a user types them
    code = main([command, str(source), "--into", into], {"FEDQI_AGENT_HOME": str(tmp_path)})
    err = capsys.readouterr().err
    assert code == 4 and err.startswith("error: "), err
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("url", [False, True])
def test_cli_failed_load_into_an_existing_store_named_by_url_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: bool
) -> None:
    """A store that existed before the load stays, with its contents, when the load fails."""
    d = _extract(tmp_path, "1,1950-03-04,F,2000-01-01")
    store = tmp_path / "practice.sqlite"
    into = f"sqlite:///{store}" if url else str(store)
    env = {"FEDQI_AGENT_HOME": str(tmp_path)}
    assert main(["load-csv", str(d), "--into", into], env) == 0
    before = dump(open_store(store))
    assert main(["load-csv", str(_bad_extract(tmp_path)), "--into", into], env) == 4
    assert dump(open_store(store)) == before


def test_cli_load_into_a_file_that_is_not_a_database_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _bad_extract(tmp_path)
    store = tmp_path / "notdb.sqlite"
    store.write_text("not a database\n")
    code = main(["load-csv", str(d), "--into", str(store)], {"FEDQI_AGENT_HOME": str(tmp_path)})
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith(f"error: the practice database {store} cannot be loaded into: "), err
    assert store.read_text() == "not a database\n"  # not the load's to delete


def test_cli_load_into_a_url_that_cannot_be_read_names_it_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store named by URL is named by URL, its password hidden (here a refused connection)."""
    into = "postgresql://fedqi:s3cret@127.0.0.1:1/practice"
    code = main(
        ["load-csv", str(_bad_extract(tmp_path)), "--into", into],
        {"FEDQI_AGENT_HOME": str(tmp_path)},
    )
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith(
        "error: the practice database postgresql://fedqi:***@127.0.0.1:1/practice cannot be "
        "loaded into: "
    ), err
    assert "s3cret" not in err


def test_cli_load_csv_says_whether_the_folder_is_missing_or_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"FEDQI_AGENT_HOME": str(tmp_path)}
    store = tmp_path / "practice.sqlite"
    missing = tmp_path / "nosuch"
    assert main(["load-csv", str(missing), "--into", str(store)], env) == 4
    assert f"error: {missing}: no such directory (expected" in capsys.readouterr().err
    afile = tmp_path / "extract.csv"
    afile.write_text("patient_id\n")
    assert main(["load-csv", str(afile), "--into", str(store)], env) == 4
    assert f"error: {afile}: not a directory (expected" in capsys.readouterr().err
    assert not store.exists()


def test_cli_check_source_names_a_sqlite_file_without_omop_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.sqlite"
    _store(path).dispose()  # a practice store: a database, but not an OMOP one
    catalogue = tmp_path / "cat.json"
    catalogue.write_text(_catalogue().model_dump_json())
    code = main(
        ["check-source", "--omop", str(path), "--catalogue", str(catalogue)],
        {"FEDQI_AGENT_HOME": str(tmp_path)},
    )
    err = capsys.readouterr().err
    assert code == 4
    assert err.startswith(f"error: omop source {path}: the database has no table person, "), err


def test_check_source_on_a_file_that_is_not_a_database_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "the practice database cannot be read: ... file is not a database", no path (a
    new-user run); a load into a folder that does not exist said "cannot be read"."""
    store = tmp_path / "notdb.sqlite"
    store.write_text("not a database\n")
    env = {"FEDQI_AGENT_HOME": str(tmp_path)}
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(_catalogue().model_dump_json())
    assert main(["check-source", "--db", str(store), "--catalogue", str(catalogue)], env) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: the practice database {store} cannot be read: "), err
    assert err.count("\n") == 1
    into = tmp_path / "absent" / "x.sqlite"
    assert main(["load-csv", str(_bad_extract(tmp_path)), "--into", str(into)], env) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: the practice database {into} cannot be loaded into: "), err
    assert not into.parent.exists()
