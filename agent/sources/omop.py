"""OMOP CDM 5.4, read in place: the canonical tables as views onto an existing OMOP database.

:func:`open_omop` returns a SQLAlchemy engine on the OMOP database whose every connection
defines three temporary views, ``patients``, ``events`` and ``medications``, over the CDM
tables. The engine (and ``check-source``) read those names as they would a practice store. A
temporary view lives only in its own session: nothing is written to the OMOP database and no
row is copied.

Mapping (docs/sources.md has the detail):

* ``patients``: ``person`` (sex from ``gender_concept_id`` 8507 male / 8532 female, else U;
  birth date from year/month/day of birth, a missing month or day taken as 1) joined to its
  latest ``observation_period`` (registration start; registration end = the period's last
  day + 1, fedqi's "first day no longer registered") and ``death``. Persons without an
  observation period are not registered, so not read.
* ``events``: ``condition_occurrence``, ``measurement`` (value and unit), ``observation``.
* ``medications``: ``drug_exposure``.

Codes: every row is read as system ``omop`` with its standard concept id as the code (so a
codelist may name OMOP concepts whatever the mode) and, as configured (``codes``), also as:

* ``standard`` (default): the standard concept's own vocabulary and code, through the
  ``concept`` table (SNOMED conditions, LOINC measurements, RxNorm drugs);
* ``source``: the source concept's vocabulary and code (``*_source_concept_id``), e.g. the
  dm+d or ICD-10 code the data were recorded in;
* ``concept_id``: nothing more (concept ids only);
* ``source_value``: the ``*_source_value`` text as a code of the one ``source_system`` given.

Rows whose concept is 0 (unmapped) or whose vocabulary fedqi does not read are left out.

A row the views read dated before its person's birth (a clinical record, an observation period's
start, a death) cannot be: :func:`open_omop` refuses the database, as load-csv and load-fhir
refuse such a record, naming each table and how many rows, never a row or a person;
``check-source`` opens it anyway and counts them (:func:`records_before_birth`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.sql.elements import ColumnElement

from agent.errors import SourceError, first_line

from .birth import BeforeBirth, Dated, before_birth_error, birth_check, count_before_birth
from .common import HBA1C_CODES, SYSTEMS

CodeMode = Literal["standard", "source", "concept_id", "source_value"]
CODE_MODES: tuple[str, ...] = ("standard", "source", "concept_id", "source_value")

# OMOP vocabulary_id -> fedqi code system.
VOCABULARIES: dict[str, str] = {
    "SNOMED": "snomedct",
    "LOINC": "loinc",
    "RxNorm": "rxnorm",
    "CVX": "cvx",
    "dm+d": "dmd",
    "ICD10": "icd10",
}
MALE, FEMALE = 8507, 8532

# The CDM columns read: (table, its concept column, source concept, source value, date).
CLINICAL: dict[str, tuple[str, str, str, str]] = {
    "condition_occurrence": (
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_source_value",
        "condition_start_date",
    ),
    "measurement": (
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_source_value",
        "measurement_date",
    ),
    "observation": (
        "observation_concept_id",
        "observation_source_concept_id",
        "observation_source_value",
        "observation_date",
    ),
    "drug_exposure": (
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_source_value",
        "drug_exposure_start_date",
    ),
}
EVENT_TABLES = ("condition_occurrence", "measurement", "observation")
REQUIRED_TABLES = ("person", "observation_period", *CLINICAL)


def _t(name: str, schema: str | None, *cols: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c) for c in cols), schema=schema)


def omop_selects(
    dialect: sa.Dialect,
    *,
    codes: str = "standard",
    source_system: str | None = None,
    schema: str | None = None,
    has_death: bool = True,
) -> dict[str, sa.Select[Any]]:
    """The SELECTs that define ``patients``, ``events`` and ``medications`` over the CDM."""
    if codes not in CODE_MODES:
        raise SourceError(f"omop codes {codes!r}: use one of {', '.join(CODE_MODES)}")
    if codes == "source_value" and source_system not in SYSTEMS:
        raise SourceError(
            "omop codes 'source_value' needs source_system, one of " + ", ".join(sorted(SYSTEMS))
        )
    d = _Dates(dialect)
    person = _t(
        "person",
        schema,
        "person_id",
        "gender_concept_id",
        "year_of_birth",
        "month_of_birth",
        "day_of_birth",
        "person_source_value",
    )
    op = _t(
        "observation_period",
        schema,
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    )
    periods = (
        sa.select(
            op.c.person_id,
            sa.func.max(op.c.observation_period_start_date).label("start"),
            sa.func.max(op.c.observation_period_end_date).label("end"),
        )
        .group_by(op.c.person_id)
        .subquery("periods")
    )
    death_date: ColumnElement[Any] = sa.null()
    from_: Any = person.join(periods, periods.c.person_id == person.c.person_id)
    if has_death:
        death = _t("death", schema, "person_id", "death_date")
        deaths = (
            sa.select(death.c.person_id, sa.func.min(death.c.death_date).label("death_date"))
            .group_by(death.c.person_id)
            .subquery("deaths")
        )
        from_ = from_.outerjoin(deaths, deaths.c.person_id == person.c.person_id)
        death_date = deaths.c.death_date
    patients = sa.select(
        person.c.person_id.label("patient_id"),
        sa.cast(person.c.person_source_value, sa.String(64)).label("local_ref"),
        d.make_date(
            person.c.year_of_birth,
            sa.func.coalesce(person.c.month_of_birth, 1),
            sa.func.coalesce(person.c.day_of_birth, 1),
        ).label("birth_date"),
        sa.case(
            (person.c.gender_concept_id == MALE, "M"),
            (person.c.gender_concept_id == FEMALE, "F"),
            else_="U",
        ).label("sex"),
        periods.c.start.label("registration_start"),
        d.next_day(periods.c.end).label("registration_end"),
        death_date.label("death_date"),
    ).select_from(from_)

    concept = _t("concept", schema, "concept_id", "vocabulary_id", "concept_code")

    def coded(table: str, with_value: bool) -> list[sa.Select[Any]]:
        """The table's rows as (system omop, concept id), plus, unless ``codes`` is
        ``concept_id``, as the code the mode names."""
        concept_col, source_concept_col, source_value_col, date_col = CLINICAL[table]
        extra = ["value_as_number", "unit_source_value"] if with_value else []
        t = _t(table, schema, "person_id", *CLINICAL[table], *extra)
        # Typed NULLs: PostgreSQL will not unite an untyped NULL with a number.
        value = sa.cast(t.c.value_as_number if with_value else sa.null(), sa.Float)
        unit = sa.cast(t.c.unit_source_value if with_value else sa.null(), sa.String(50))

        def select(system: Any, code: Any, from_t: Any, where: Any) -> sa.Select[Any]:
            cols = [
                t.c.person_id.label("patient_id"),
                t.c[date_col].label("date"),
                sa.cast(system, sa.String(16)).label("system"),
                sa.cast(code, sa.String(32)).label("code"),
            ]
            if table != "drug_exposure":
                cols += [value.label("value"), unit.label("unit")]
            return sa.select(*cols).select_from(from_t).where(where)

        out = [
            select(
                sa.literal("omop"),
                sa.cast(t.c[concept_col], sa.String(32)),
                t,
                t.c[concept_col] != 0,
            )
        ]
        if codes in ("standard", "source"):
            key = t.c[concept_col] if codes == "standard" else t.c[source_concept_col]
            system = sa.case(
                *((concept.c.vocabulary_id == v, s) for v, s in VOCABULARIES.items()),
                else_=sa.null(),
            )
            out.append(
                select(
                    system,
                    concept.c.concept_code,
                    t.join(concept, concept.c.concept_id == key),
                    sa.and_(key != 0, concept.c.vocabulary_id.in_(list(VOCABULARIES))),
                )
            )
        elif codes == "source_value":
            code = t.c[source_value_col]
            out.append(
                select(sa.literal(source_system), code, t, sa.and_(code.is_not(None), code != ""))
            )
        return out

    raw_events = sa.union_all(
        *(
            part
            for name in EVENT_TABLES
            for part in coded(name, name in ("measurement", "observation"))
        )
    ).subquery("raw_events")
    # HbA1c recorded as NGSP % becomes IFCC mmol/mol, as the other sources do.
    is_pct = sa.and_(
        raw_events.c.unit == "%",
        sa.or_(
            *(
                sa.and_(raw_events.c.system == s, raw_events.c.code == c)
                for s, c in sorted(HBA1C_CODES)
            )
        ),
    )
    events = sa.select(
        raw_events.c.patient_id,
        raw_events.c.date,
        raw_events.c.system,
        raw_events.c.code,
        sa.case(
            (
                is_pct,
                sa.cast(
                    sa.func.round(sa.cast((raw_events.c.value - 2.152) / 0.09148, sa.Numeric), 1),
                    sa.Float,
                ),
            ),
            else_=raw_events.c.value,
        ).label("value"),
        sa.case((is_pct, "mmol/mol"), else_=raw_events.c.unit).label("unit"),
    )
    medications = sa.union_all(*coded("drug_exposure", False))
    return {
        "patients": patients,
        "events": events,
        "medications": sa.select(medications.subquery()),
    }


class _Dates:
    """Date arithmetic the views need, per dialect (the one place they differ)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.name = dialect.name

    def make_date(self, y: Any, m: Any, d: Any) -> ColumnElement[Any]:
        if self.name == "sqlite":
            return sa.func.date(sa.func.printf("%04d-%02d-%02d", y, m, d))
        return sa.func.make_date(y, m, d)

    def next_day(self, date: Any) -> ColumnElement[Any]:
        if self.name == "sqlite":
            return sa.func.date(date, "+1 day")
        return sa.cast(date + sa.literal_column("1"), sa.Date)


def view_sql(engine: Engine, **options: Any) -> dict[str, str]:
    """``CREATE TEMPORARY VIEW`` statements for the three canonical names."""
    selects = omop_selects(engine.dialect, **options)
    out = {}
    for name, select in selects.items():
        body = select.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        out[name] = f"CREATE TEMPORARY VIEW {name} AS {body}"
    return out


#: The CDM tables whose ``value_as_number`` the ``events`` view reads.
VALUED_TABLES = ("measurement", "observation")


def _refuse_non_finite(engine: Engine, schema: str | None, where: str) -> None:
    """Fail, naming the table and column and how many rows, when a value the views read is NaN
    or infinite, as the CSV and FHIR loaders do: each database compares such a value
    differently (SQLite cannot store a NaN; PostgreSQL ranks it above every number), so a
    rule's result would depend on where the data live. Counts only: no row is named."""
    special = [float("nan"), float("inf"), float("-inf")]
    found = []
    try:
        with engine.connect() as conn:
            for table in VALUED_TABLES:
                t = _t(table, schema, "value_as_number")
                (n,) = conn.execute(
                    sa.select(sa.func.count()).where(
                        sa.cast(t.c.value_as_number, sa.Float).in_(special)
                    )
                ).one()
                if n:
                    found.append(f"{table}.value_as_number holds {n} row(s)")
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise SourceError(
            f"omop source {where}: cannot read the values ({first_line(exc)})"
        ) from None
    if found:
        engine.dispose()
        raise SourceError(
            f"omop source {where}: {'; '.join(found)} that are not finite numbers (NaN or infinity), "
            "which fedqi cannot compare; set them to NULL or correct them in the OMOP database"
        )


#: The date each CDM table the views read is dated by, checked against its person's birth:
#: the clinical tables, the observation period's start (registration) and the death.
DATED: dict[str, str] = {
    **{table: cols[3] for table, cols in CLINICAL.items()},
    "observation_period": "observation_period_start_date",
    "death": "death_date",
}


def records_before_birth(conn: sa.Connection, schema: str | None = None) -> dict[str, BeforeBirth]:
    """For each table in :data:`DATED` (``death`` if it exists), how many rows are dated
    before their person's birth, and of how many persons; every row counts, whatever its
    concept. The birth date is the one the ``patients`` view reads (a missing month or day
    taken as 1, its first possible day), so a row counts only if it precedes every day the
    birth can be. Counts only: no row, person or date is returned.

    Cheap where nothing is wrong, as it should be: one statement
    (:func:`agent.sources.birth.birth_check`) compares each person's earliest date in each
    table with their birth; rows are counted only in a table where a person has one."""
    person = _t("person", schema, "person_id", "year_of_birth", "month_of_birth", "day_of_birth")
    birth = _Dates(conn.dialect).make_date(
        person.c.year_of_birth,
        sa.func.coalesce(person.c.month_of_birth, 1),
        sa.func.coalesce(person.c.day_of_birth, 1),
    )
    has_death = sa.inspect(conn).has_table("death", schema)
    dated = {t: Dated(t, column) for t, column in DATED.items() if t != "death" or has_death}
    check = birth_check(dated, person, "person_id", birth, schema)
    return count_before_birth(check, lambda q: conn.execute(q).one())


def _refuse_before_birth(engine: Engine, schema: str | None, where: str) -> None:
    """Fail, naming each table and date column and how many rows, when a row the views read is
    dated before its person's birth, as load-csv and load-fhir refuse such a record: a rule
    would count an impossible date silently. Counts only: no row or person is named
    (``check-source`` counts them too, without refusing; docs/sources.md lists them)."""
    try:
        with engine.connect() as conn:
            counts = records_before_birth(conn, schema)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise SourceError(
            f"omop source {where}: cannot read the dates ({first_line(exc)})"
        ) from None
    error = before_birth_error(
        f"omop source {where}: ",
        {t: Dated(t, column) for t, column in DATED.items()},
        counts,
        person="person",
        birth="year_of_birth, month_of_birth, day_of_birth",
    )
    if error is not None:
        engine.dispose()
        raise error


def _where(url: str) -> str:
    """The OMOP database as errors name it: a SQLite or DuckDB file by its path, any other by
    its URL without the password (``url`` is one :func:`_read_only` accepted)."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() in ("sqlite", "duckdb") and database not in ("", ":memory:"):
        return database
    return parsed.render_as_string(hide_password=True)


URL_EXAMPLES = "sqlite:///omop.sqlite, duckdb:////data/omop.duckdb or postgresql://user@host/omop"


def _read_only(url: str, options: dict[str, Any]) -> tuple[sa.URL, dict[str, Any]]:
    """The URL (and engine options) that open the OMOP database read-only, where the driver
    allows: a missing SQLite or DuckDB file is an error naming it, never a new empty file
    (SQLite and DuckDB create one on connecting; docs/sources.md says nothing is written)."""
    try:
        if "://" not in url:
            raise sa.exc.ArgumentError(url)
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise SourceError(
            f"omop source {url!r}: not a database URL; an SQLAlchemy URL is expected, e.g. "
            f"{URL_EXAMPLES}"
        ) from None
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend not in ("sqlite", "duckdb") or database in ("", ":memory:"):
        return parsed, options
    if backend == "sqlite" and parsed.query.get("uri") in ("true", "1"):
        # Already an SQLite URI filename ("file:..."): only ask for read-only.
        if "mode" not in parsed.query:
            parsed = parsed.update_query_dict({"mode": "ro"})
        return parsed, options
    path = Path(database).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise SourceError(f"omop source {path}: {what}")
    if backend == "sqlite":
        uri = "file:" + urllib.parse.quote(str(path.resolve()), safe="/")
        return parsed.set(database=uri).update_query_dict({"mode": "ro", "uri": "true"}), options
    connect_args = dict(options.get("connect_args") or {})
    connect_args["config"] = {**dict(connect_args.get("config") or {}), "access_mode": "READ_ONLY"}
    return parsed, {**options, "connect_args": connect_args}


def open_omop(
    url: str,
    *,
    codes: str = "standard",
    source_system: str | None = None,
    schema: str | None = None,
    engine_options: Mapping[str, Any] | None = None,
    refuse_before_birth: bool = True,
) -> Engine:
    """An engine on the OMOP database at ``url`` whose connections see the canonical tables
    as temporary views (see the module docstring). Fails with a clear error if the CDM tables
    the views need are absent, if a value they read is NaN or infinite, or (unless
    ``refuse_before_birth`` is false: ``check-source`` counts them instead) if a row they read
    is dated before its person's birth. A SQLite or DuckDB file is opened read-only and must
    exist: it is never created."""
    parsed, options = _read_only(url, dict(engine_options or {}))
    where = _where(url)
    engine = sa.create_engine(parsed, **options)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            present = set(inspector.get_table_names(schema=schema))
            if engine.dialect.name == "postgresql":
                present |= set(inspector.get_view_names(schema=schema))
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        raise SourceError(
            f"omop source {where}: cannot read the database ({first_line(exc)})"
        ) from None
    needed = list(REQUIRED_TABLES) + (["concept"] if codes in ("standard", "source") else [])
    missing = [t for t in needed if t not in present]
    if missing:
        engine.dispose()
        in_schema = f" in schema {schema!r}" if schema else ""
        raise SourceError(
            f"omop source {where}: the database has no table {', '.join(missing)}{in_schema} "
            "(an OMOP CDM 5.4 database is expected)"
        )
    _refuse_non_finite(engine, schema, where)
    if refuse_before_birth:
        _refuse_before_birth(engine, schema, where)
    statements = view_sql(
        engine,
        codes=codes,
        source_system=source_system,
        schema=schema,
        has_death="death" in present,
    )
    engine.dispose()  # connections made before the views were registered

    @event.listens_for(engine, "connect")
    def _views(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for sql in statements.values():
                if engine.dialect.paramstyle in ("format", "pyformat"):
                    # The compiled SQL doubles a literal '%'; an empty parameter list makes
                    # the driver read it back as one.
                    cursor.execute(sql, ())
                else:
                    cursor.execute(sql)
        finally:
            cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()

    return engine
