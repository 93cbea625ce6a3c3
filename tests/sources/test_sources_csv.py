"""CSV extracts: known answers on hand-made files, both date formats, sex code variants, and
bad input that names the file, line and column and leaves the store as it was."""

from __future__ import annotations

import datetime as dt
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sources_helpers import dump, write_csv

from agent.errors import SourceError
from agent.sources import schema
from agent.sources.common import ngsp_to_ifcc, open_store
from agent.sources.csv_extract import load_csv

PATIENTS_ISO = """patient_id,local_ref,birth_date,sex,registration_start,registration_end,death_date
1,A1,1950-03-04,F,2000-01-01,,
2,A2,1960-12-31,Male,2010-05-06,2024-01-01,
3,,1970-07-08,9,2015-01-01,,2024-06-30
4,A4,2001-02-03,female,2019-09-09,,
"""
EVENTS_ISO = """patient_id,date,system,code,value,unit
1,2024-02-01,snomedct,38341003,,
1,2024-03-01,snomedct,271649006,138,mm[Hg]
2,2023-11-11,http://loinc.org,4548-4,7.5,%
3,2020-01-01,loinc,4548-4,55,mmol/mol
"""
MEDS_ISO = """patient_id,date,system,code
1,2024-03-02,dmd,42381911000001105
4,2024-04-04,,703907006
"""


def _extract(tmp_path: Path) -> Path:
    d = tmp_path / "extract"
    write_csv(d, "patients", PATIENTS_ISO)
    write_csv(d, "events", EVENTS_ISO)
    write_csv(d, "medications", MEDS_ISO)
    return d


def test_load_csv_known_rows(tmp_path: Path) -> None:
    engine = open_store(tmp_path / "store.sqlite")
    report = load_csv(_extract(tmp_path), engine)
    assert (report.patients, report.events, report.medications) == (4, 4, 2)
    assert report.converted == {"HbA1c % converted to mmol/mol": 1}
    rows = dump(engine)
    p = {r.patient_id: r for r in rows["patients"]}
    assert p[1].sex == "F" and p[2].sex == "M" and p[3].sex == "U" and p[4].sex == "F"
    assert p[1].local_ref == "A1" and p[3].local_ref is None
    assert p[2].registration_end == dt.date(2024, 1, 1)
    assert p[3].death_date == dt.date(2024, 6, 30)
    ev = {(r.patient_id, r.code): r for r in rows["events"]}
    assert ev[(1, "271649006")].value == 138.0 and ev[(1, "271649006")].unit == "mm[Hg]"
    assert ev[(1, "38341003")].value is None
    hba1c = ev[(2, "4548-4")]
    assert hba1c.system == "loinc" and hba1c.unit == "mmol/mol"
    assert hba1c.value == pytest.approx(58.5, abs=0.05)  # 7.5 % NGSP = 58.5 mmol/mol IFCC
    assert ev[(3, "4548-4")].value == 55.0  # already mmol/mol: unchanged
    meds = {(r.patient_id, r.system, r.code) for r in rows["medications"]}
    assert meds == {(1, "dmd", "42381911000001105"), (4, "dmd", "703907006")}  # dmd by default


def test_ngsp_to_ifcc_matches_published_pairs() -> None:
    # NGSP master equation pairs as laboratories report them: 6.5 % = 48, 7.0 % = 53, 8 % = 64
    assert round(ngsp_to_ifcc(6.5)) == 48
    assert round(ngsp_to_ifcc(7.0)) == 53
    assert round(ngsp_to_ifcc(8.0)) == 64


def _uk(text: str) -> str:
    """The ISO dates in ``text`` written day-first, as a UK extract has them."""
    return re.sub(r"(\d{4})-(\d{2})-(\d{2})", lambda m: f"{m[3]}/{m[2]}/{m[1]}", text)


def test_uk_dates_give_the_same_store_as_iso(tmp_path: Path) -> None:
    iso_engine = open_store(tmp_path / "iso.sqlite")
    load_csv(_extract(tmp_path), iso_engine)
    d = tmp_path / "uk"
    write_csv(d, "patients", _uk(PATIENTS_ISO))
    write_csv(d, "events", _uk(EVENTS_ISO))
    write_csv(d, "medications", _uk(MEDS_ISO))
    assert "04/03/1950" in (d / "patients.csv").read_text()
    uk_engine = open_store(tmp_path / "uk.sqlite")
    load_csv(d, uk_engine, date_format="uk")
    assert dump(uk_engine) == dump(iso_engine)


def test_load_replaces_previous_contents(tmp_path: Path) -> None:
    engine = open_store(tmp_path / "store.sqlite")
    load_csv(_extract(tmp_path), engine)
    load_csv(_extract(tmp_path), engine)
    assert len(dump(engine)["patients"]) == 4


def test_load_into_duckdb(tmp_path: Path) -> None:
    engine = open_store(tmp_path / "store.duckdb")
    report = load_csv(_extract(tmp_path), engine)
    assert (report.patients, report.events, report.medications) == (4, 4, 2)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar_one()
    assert n == 4
    engine.dispose()


BAD_CASES = [
    pytest.param(
        "patients",
        PATIENTS_ISO.replace("1960-12-31", "31/12/1960"),
        "patients.csv line 3, column birth_date: not an ISO date (YYYY-MM-DD)",
        id="wrong-date-format",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO.replace("2001-02-03,female", "2001-02-03,woman"),
        "patients.csv line 5, column sex: unknown sex code (use F/M/U",
        id="unknown-sex-code",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO.replace(",sex,", ",gender,"),
        "patients.csv line 1: unknown column 'gender'",
        id="renamed-column",
    ),
    pytest.param(  # the header row left out: line 1 is a patient's data, never quoted
        "patients",
        PATIENTS_ISO.split("\n", 1)[1].replace("1,A1,", "987654,A1,"),
        "patients.csv line 1: names none of the columns (is the header row missing?",
        id="no-header-row",
    ),
    pytest.param(  # a name with digits may be a value where a name should be: not quoted
        "events",
        EVENTS_ISO.replace(
            "patient_id,date,system,code,value,unit", "patient_id,date,system,code,value,20240101"
        ),
        "events.csv line 1: unknown column 6 (its name holds digits)",
        id="header-name-with-digits",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO.replace("patient_id,local_ref,birth_date,sex,", "patient_id,local_ref,sex,")
        .replace("1950-03-04,", "")
        .replace("1960-12-31,", "")
        .replace("1970-07-08,", "")
        .replace("2001-02-03,", ""),
        "patients.csv line 1: missing required column 'birth_date'",
        id="missing-required-column",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO + "2,B2,1980-01-01,M,2020-01-01,,\n",
        "patients.csv line 6, column patient_id: duplicate patient id (first on line 3)",
        id="duplicate-patient-id",
    ),
    pytest.param(
        "events",
        EVENTS_ISO + "9,2024-01-01,snomedct,38341003,,\n",
        "events.csv line 6, column patient_id: no such patient in patients.csv",
        id="unknown-patient",
    ),
    pytest.param(
        "events",
        EVENTS_ISO + "1,2024-01-01,snomedct,38341003,high,\n",
        "events.csv line 6, column value: not a number",
        id="bad-value",
    ),
    pytest.param(
        "events",
        EVENTS_ISO + "1,2024-01-01,read,G20..,,\n",
        "events.csv line 6, column system: unknown code system (snomedct",
        id="unknown-system",
    ),
    pytest.param(
        "medications",
        MEDS_ISO + "1,2024-02-30,dmd,703907006\n",
        "medications.csv line 4, column date: not a valid date (its day is not in its month)",
        id="impossible-date",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO.replace("1960-12-31,Male,2010-05-06", "2030-01-01,Male,2010-05-06"),
        "patients.csv line 3, column birth_date: after registration_start (registered before "
        "birth)",
        id="born-after-registration",
    ),
    pytest.param(
        "patients",
        PATIENTS_ISO.replace("2015-01-01,,2024-06-30", "2015-01-01,,1969-06-30"),
        "patients.csv line 4, column death_date: before birth_date",
        id="died-before-birth",
    ),
    pytest.param(
        "events",
        EVENTS_ISO + "2,1960-12-30,snomedct,38341003,,\n",
        "events.csv line 6, column date: before the birth_date of its patient (patients.csv line 3)",
        id="event-before-birth",
    ),
    pytest.param(
        "medications",
        MEDS_ISO + "4,2001-02-02,dmd,703907006\n",
        "medications.csv line 4, column date: before the birth_date of its patient "
        "(patients.csv line 5)",
        id="medication-before-birth",
    ),
    pytest.param(
        "events",
        EVENTS_ISO + "1,2024-01-01,snomedct\n",
        "events.csv line 6: 3 fields, the header has 6",
        id="short-row",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_CASES)
def test_bad_input_names_where_and_leaves_store_unchanged(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    engine = open_store(tmp_path / "store.sqlite")
    good = _extract(tmp_path)
    load_csv(good, engine)
    before = dump(engine)
    assert before["patients"]
    bad = tmp_path / "bad"
    for f in ("patients", "events", "medications"):
        write_csv(bad, f, (good / f"{f}.csv").read_text())
    write_csv(bad, name, text)
    with pytest.raises(SourceError) as info:
        load_csv(bad, engine)
    assert message in str(info.value)
    assert "987654" not in str(info.value) and "20240101" not in str(info.value)
    assert str(bad / f"{name}.csv") in str(info.value)
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param(EVENTS_ISO + '1,2024-01-01,snomedct,"unterminated,,\n', 6, id="last-line"),
        pytest.param(
            EVENTS_ISO + '1,2024-01-01,snomedct,"unterminated', 6, id="last-line-no-newline"
        ),
        pytest.param(
            EVENTS_ISO.replace(",38341003,,", ',"38341003,,'), 2, id="mid-file-to-the-end"
        ),
        pytest.param(  # the swallowed text ends at a later quote and reads as one record
            EVENTS_ISO.replace(",38341003,,", ',"38341003,,').replace(
                ",271649006,", ',271649006",'
            ),
            2,
            id="mid-file-closed-later",
        ),
        pytest.param(  # ... or at a later quote that is followed by more text
            EVENTS_ISO.replace(",38341003,,", ',"38341003,,').replace(
                ",4548-4,7.5", ',"4548-4"x,7.5'
            ),
            2,
            id="mid-file-then-junk",
        ),
    ],
)
def test_an_unclosed_quote_is_named_at_the_line_it_opens(
    tmp_path: Path, text: str, line: int
) -> None:
    """A quote left open (at the end of the file or mid-file) stops the load naming the line
    the quote opens on, not where the reader gave up, and prints none of the swallowed text;
    the store keeps what it had."""
    engine = open_store(tmp_path / "store.sqlite")
    good = _extract(tmp_path)
    load_csv(good, engine)
    before = dump(engine)
    bad = tmp_path / "bad"
    for f in ("patients", "medications"):
        write_csv(bad, f, (good / f"{f}.csv").read_text())
    (bad / "events.csv").write_text(text)
    with pytest.raises(SourceError) as info:
        load_csv(bad, engine)
    message = str(info.value)
    assert message.startswith(
        f"{bad / 'events.csv'} line {line}: a quoted field is not closed (its quote opens on "
        "this line"
    ), message
    assert "38341003" not in message and "unterminated" not in message
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("name", "row", "date_format"),
    [
        ("events", "1,1950-03-03,snomedct,38341003,,", "iso"),
        ("medications", "1,1950-03-03,dmd,703907006", "iso"),
        # 5 Feb 1950 is before 4 Mar 1950, though "05/02/1950" sorts after "04/03/1950" as text
        ("events", "1,1950-02-05,snomedct,38341003,,", "uk"),
    ],
    ids=["event", "medication", "uk-event"],
)
def test_a_row_dated_before_birth_is_refused_naming_no_date(
    tmp_path: Path, name: str, row: str, date_format: str
) -> None:
    """Patient 1 (born 1950-03-04): a row the day before, or earlier in the year in a UK
    extract, stops the load naming the file, line, column and the patient's line in
    patients.csv, not the dates or the patient id (as the other impossible dates), and the store
    keeps what it had."""
    engine = open_store(tmp_path / "store.sqlite")
    load_csv(_extract(tmp_path), engine)
    before = dump(engine)
    bad = tmp_path / "bad"
    texts = {"patients": PATIENTS_ISO, "events": EVENTS_ISO, "medications": MEDS_ISO}
    texts[name] += row + "\n"
    for f, text in texts.items():
        write_csv(bad, f, _uk(text) if date_format == "uk" else text)
    with pytest.raises(SourceError) as info:
        load_csv(bad, engine, date_format=date_format)
    message = str(info.value)
    line = len(texts[name].splitlines())
    assert (
        f"{bad / name}.csv line {line}, column date: before the birth_date of its patient "
        "(patients.csv line 2): a record cannot precede the patient's birth; nothing was loaded"
    ) in message, message
    rest = message.replace(str(bad), "")  # the test's folder aside, no date is printed
    assert "1950" not in rest, message
    assert dump(engine) == before


@pytest.mark.parametrize("date_format", ["iso", "uk"])
def test_a_row_on_the_birth_date_loads(tmp_path: Path, date_format: str) -> None:
    """Rows on the day of birth (and the day after, "01/01/1961" sorting before "31/12/1960"
    as text) are no impossible dates: they load."""
    d = tmp_path / "extract"
    events = EVENTS_ISO + "2,1960-12-31,snomedct,38341003,,\n2,1961-01-01,snomedct,38341003,,\n"
    meds = MEDS_ISO + "4,2001-02-03,dmd,703907006\n"
    texts = {"patients": PATIENTS_ISO, "events": events, "medications": meds}
    for f, text in texts.items():
        write_csv(d, f, _uk(text) if date_format == "uk" else text)
    engine = open_store(tmp_path / "store.sqlite")
    report = load_csv(d, engine, date_format=date_format)
    assert (report.events, report.medications) == (6, 3)
    rows = dump(engine)
    assert {r.date for r in rows["events"] if r.patient_id == 2} == {
        dt.date(1960, 12, 31),
        dt.date(1961, 1, 1),
        dt.date(2023, 11, 11),
    }
    assert dt.date(2001, 2, 3) in {r.date for r in rows["medications"] if r.patient_id == 4}


def test_bad_input_into_a_new_store_leaves_no_tables(tmp_path: Path) -> None:
    d = _extract(tmp_path)
    write_csv(d, "medications", MEDS_ISO + "1,2024-13-01,dmd,703907006\n")
    engine = open_store(tmp_path / "new.sqlite")
    with pytest.raises(SourceError, match="line 4, column date"):
        load_csv(d, engine)
    assert dump(engine) == {}  # even the table creation rolled back


def test_missing_file_is_named(tmp_path: Path) -> None:
    d = _extract(tmp_path)
    (d / "medications.csv").unlink()
    with pytest.raises(SourceError, match=r"medications\.csv: not found"):
        load_csv(d, open_store(tmp_path / "s.sqlite"))


def test_large_extract_streams_in_flat_memory(tmp_path: Path) -> None:
    """Peak memory while loading does not grow with the events file (4x the rows, about the
    same peak): rows are read one at a time and inserted in batches."""

    def peak(n_events: int) -> int:
        d = tmp_path / f"x{n_events}"
        write_csv(
            d,
            "patients",
            "patient_id,birth_date,sex,registration_start\n1,1950-01-01,F,2000-01-01\n",
        )
        write_csv(d, "medications", "patient_id,date,code\n")
        with (d / "events.csv").open("w") as fh:
            fh.write("patient_id,date,code,value\n")
            for i in range(n_events):
                fh.write(f"1,2024-01-{1 + i % 28:02d},271649006,{100 + i % 50}\n")
        engine = open_store(tmp_path / f"s{n_events}.sqlite")
        tracemalloc.start()
        try:
            report = load_csv(d, engine)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.events == n_events
        return top

    small, large = peak(12_000), peak(48_000)
    assert large < small * 1.5, (small, large)


@pytest.mark.postgres
def test_load_into_postgresql_and_bad_row_changes_nothing(
    tmp_path: Path, pg_database_factory: Any
) -> None:
    engine = open_store(pg_database_factory())
    report = load_csv(_extract(tmp_path), engine)
    assert (report.patients, report.events, report.medications) == (4, 4, 2)
    sqlite_engine = open_store(tmp_path / "s.sqlite")
    load_csv(_extract(tmp_path), sqlite_engine)
    before = dump(engine)
    assert before == dump(sqlite_engine)
    bad = tmp_path / "bad"
    write_csv(bad, "patients", PATIENTS_ISO + "1,B1,1980-01-01,M,2020-01-01,,\n")
    write_csv(bad, "events", EVENTS_ISO)
    write_csv(bad, "medications", MEDS_ISO)
    with pytest.raises(SourceError, match="line 6, column patient_id: duplicate patient id"):
        load_csv(bad, engine)
    assert dump(engine) == before
    engine.dispose()


def test_duckdb_store_keeps_decimal_values_exact(tmp_path: Path) -> None:
    d = _extract(tmp_path)
    write_csv(d, "events", "patient_id,date,code,value\n1,2024-01-01,1234,4.6\n")
    engine = open_store(tmp_path / "s.duckdb")
    load_csv(d, engine)
    with engine.connect() as conn:
        value = conn.execute(sa.select(schema.events.c.value)).scalar_one()
    engine.dispose()
    assert value == 4.6
