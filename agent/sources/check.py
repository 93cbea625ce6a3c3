"""``check-source``: what a source holds, measured against the catalogue's codelists, so a
practice can tell whether its coding is caught before it submits.

Reads the canonical tables (a loaded store, or an OMOP database through its views) and reports
counts only: patients, date ranges, rows per table and code system; for each codelist (each
national cluster) how many patients have at least one of its codes; the most frequent codes in
the clinical code systems the catalogue reads (SNOMED CT, dm+d) that match no list, which count
towards nothing; and rows in code systems no list uses. The report is shown locally and never
sent.

It also counts, per table, the rows dated before their person's birth (on an OMOP database
:func:`agent.sources.omop.records_before_birth`, per CDM table; on a practice database in the
canonical tables :func:`agent.sources.birth.practice_before_birth`): preview and submit refuse
such a database, and the report says so and what to correct, without naming a row or a person.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from agent.errors import SourceError
from agent.sources.schema import events, medications, patients
from protocol.catalogue import Catalogue

TOP_UNUSED = 20
MAX_UNSEEN_LISTED = 50


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableSummary(_Frozen):
    rows: int
    first_date: dt.date | None
    last_date: dt.date | None
    by_system: dict[str, int]


class CodeCount(_Frozen):
    table: str
    system: str
    code: str
    rows: int


class CodelistCoverage(_Frozen):
    id: str
    cluster: str
    codes: int
    seen: int
    rows: int
    patients: int  # patients (any registration status) with at least one code of the list
    never_seen: list[str]  # "system:code", at most MAX_UNSEEN_LISTED
    never_seen_total: int


class BeforeBirthCount(_Frozen):
    rows: int
    persons: int


class SourceCheck(_Frozen):
    patients: int
    registered_now: int
    #: The end of the last complete month (the latest period that can be submitted).
    period_end: dt.date
    #: Patients whose registration (on OMOP: observation period) ends before ``period_end``
    #: with no death recorded: they count as gone from the practice's list.
    left_without_death: int
    source_kind: str | None = None
    tables: dict[str, TableSummary]
    clinical_systems: list[str]  # the code systems the catalogue's lists use
    # The most frequent codes in those systems that no codelist names, most frequent first.
    unused_codes: list[CodeCount]
    unused_distinct: int
    # Rows in code systems no codelist uses at all (e.g. LOINC in a FHIR extract): not counted.
    other_systems: dict[str, int]
    codelists: list[CodelistCoverage]
    #: Per table read (OMOP: per CDM table; canonical: events, medications and the patients'
    #: registration_start and death_date), the rows dated before their person's birth and how
    #: many persons they are of; preview and submit refuse the database while any has one.
    before_birth: dict[str, BeforeBirthCount]

    def before_birth_rows(self) -> int:
        return sum(n.rows for n in self.before_birth.values())

    def _before_birth_found(self) -> list[str]:
        if not self.before_birth_rows():
            return []
        tables = ", ".join(
            f"{table} {_n(n.rows, 'row')} ({_n(n.persons, 'person')})"
            for table, n in self.before_birth.items()
            if n.rows
        )
        person = "person" if self.source_kind == "omop" else "patient"
        return [
            f"  Rows dated before their {person}'s birth, which cannot be: {tables}. Preview and "
            "submit refuse this database until they are corrected."
        ]

    def _before_birth_todo(self) -> list[str]:
        if not self.before_birth_rows():
            return []
        if self.source_kind != "omop":
            return [
                f"  - Correct the {_n(self.before_birth_rows(), 'row')} dated before their "
                "patient's birth (per table above) in the practice database, or the patient's "
                "birth_date where that is what is wrong. A record cannot precede the patient's "
                "birth, so preview and submit refuse this database until none is left (load-csv "
                "and load-fhir refuse such a record too). docs/sources.md shows a query that "
                "lists them there; this report names no row or patient."
            ]
        return [
            f"  - OMOP: correct the {_n(self.before_birth_rows(), 'row')} dated before their "
            "person's birth (per table above) in the OMOP database, or the person's "
            "year_of_birth, month_of_birth or day_of_birth where that is what is wrong. A "
            "record cannot precede the patient's birth, so preview and submit refuse this "
            "database until none is left. docs/sources.md shows a query that lists them "
            "there; this report names no row or person."
        ]

    def lines(self) -> list[str]:
        """The report in words a practice manager can act on: what was found, what is
        missing, what to do."""
        found = [
            "WHAT WAS FOUND",
            f"  {self.patients} patients in the records, {self.registered_now} of them registered "
            "and alive today.",
        ]
        names = {"events": "Clinical records", "medications": "Prescriptions"}
        for name, t in self.tables.items():
            span = f"dated {t.first_date} to {t.last_date}" if t.rows else "none"
            systems = ", ".join(f"{s} {n}" for s, n in sorted(t.by_system.items()))
            found.append(
                f"  {names.get(name, name)}: {t.rows} rows, {span}"
                + (f" (by code system: {systems})" if systems else "")
                + "."
            )
        found.append(
            "  Conditions and treatments the indicators look for (patients with at least one "
            "code of the list; codes of the list seen; rows):"
        )
        width = max((len(cl.id) for cl in self.codelists), default=0)
        for cl in self.codelists:
            if cl.seen:
                found.append(
                    f"    {cl.id:<{width}}  {cl.patients:>7} patients  {cl.seen:>4}/{cl.codes} "
                    f"codes  {cl.rows} rows  ({cl.cluster})"
                )
        omop = self.source_kind == "omop"
        if self.left_without_death:
            n = self.left_without_death
            ended = "observation period" if omop else "registration"
            what = f"1 patient's {ended} ends" if n == 1 else f"{n} patients' {ended}s end"
            they = "they count" if n > 1 else "the patient counts"
            found.append(
                f"  {what} before {self.period_end} with no death recorded: {they} as gone "
                "from the practice's list."
            )

        found += self._before_birth_found()

        missing = ["WHAT IS MISSING"]
        never = [cl for cl in self.codelists if cl.seen == 0]
        for cl in never:
            missing.append(f"  No patient has any code of {cl.id} ({cl.cluster}).")
        systems = " or ".join(self.clinical_systems) or "no system"
        if self.unused_distinct:
            missing.append(
                f"  {self.unused_distinct} different {systems} codes are recorded but are on no "
                "list, so they count towards no indicator. The most frequent:"
            )
            for c in self.unused_codes:
                missing.append(
                    f"    {names.get(c.table, c.table)} {c.system}:{c.code}  {c.rows} rows"
                )
        if self.other_systems:
            rows = ", ".join(f"{s} {n} rows" for s, n in sorted(self.other_systems.items()))
            missing.append(f"  Rows in code systems no list uses (not counted): {rows}.")
        if len(missing) == 1:
            missing.append("  Nothing: every list has patients and every code is on a list.")

        todo = ["WHAT TO DO", *self._before_birth_todo()]
        if never:
            todo.append(
                f"  - {', '.join(cl.id for cl in never)}: if the practice records these "
                "conditions or medicines, check that the extract includes them and that they "
                f"are coded in {systems}."
            )
        if self.unused_distinct:
            todo.append(
                "  - Codes on no list: if one of them means a condition an indicator looks for, "
                "ask the network to add it to the list (or record the listed code)."
            )
        if self.other_systems:
            todo.append(
                "  - Rows in other code systems are not counted: if they hold diagnoses or "
                "prescriptions, the extract needs them in the systems above."
            )
        if omop and self.left_without_death:
            todo.append(
                f"  - OMOP: {self.left_without_death} of {self.patients} persons' observation "
                f"periods end before {self.period_end} with no death. The agent reads an "
                "observation period as registration with the practice, so they are not in any "
                "denominator after it ends. That is right for OMOP built from GP records; in a "
                "research extract (Synthea's, for one) an observation period ends at the last "
                "record, so these people would silently drop out: check before submitting."
            )
        if len(todo) == 1:
            todo.append(
                "  Nothing: the source looks ready. `fedqi-agent preview` shows what would be sent."
            )
        return found + missing + todo


def _n(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _as_date(value: object, column: str) -> dt.date | None:
    """A date column's earliest or latest value as a date; a value that is not an ISO date
    (YYYY-MM-DD, as docs/data-model.md requires) is a SourceError naming the column, never the
    value (a patient's date)."""
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise _not_iso(column) from None


def _not_iso(column: str) -> SourceError:
    return SourceError(
        f"{column}: holds a value that is not a date as YYYY-MM-DD (the form "
        "docs/data-model.md gives every date column), so nothing can be read by date; "
        "correct the column in the practice database"
    )


def _patients_per_list(conn: sa.Connection, catalogue: Catalogue) -> dict[int, int]:
    """For each codelist (by index), how many patients have a row (in either table) with one of
    its codes: one grouped statement joining the rows to a VALUES table of the codes."""
    pairs = sorted(
        (system, code, k) for k, cl in enumerate(catalogue.codelists) for system, code in cl.pairs()
    )
    if not pairs:
        return {}
    codes = (
        sa.values(
            sa.column("system", sa.String),
            sa.column("code", sa.String),
            sa.column("k", sa.Integer),
            name="list_codes",
            literal_binds=True,
        )
        .data(pairs)
        .cte("list_codes")
    )
    rows = sa.union_all(
        *(sa.select(t.c.patient_id, t.c.system, t.c.code) for t in (events, medications))
    ).subquery("coded")
    query = (
        sa.select(codes.c.k, sa.func.count(sa.distinct(rows.c.patient_id)))
        .select_from(rows.join(codes, rows.c.code == codes.c.code))
        .where(rows.c.system == codes.c.system)
        .group_by(codes.c.k)
    )
    return {int(k): int(n) for k, n in conn.execute(query)}


def check_source(
    engine: Engine,
    catalogue: Catalogue,
    today: dt.date,
    *,
    source_kind: str | None = None,
    where: str | None = None,
) -> SourceCheck:
    """Summarise the canonical tables at ``engine`` against ``catalogue``'s codelists.
    ``source_kind`` "omop" (``engine`` is an OMOP database's, from
    :func:`agent.sources.omop.open_omop`) words the report for that source and counts the rows
    dated before their person's birth in its CDM tables; otherwise they are counted in the
    canonical tables, after their values are checked for their form
    (:mod:`agent.sources.form`): a database holding one not in it is refused as preview
    refuses it (a SourceError naming each column and how many rows; ``where`` names the
    database), since nothing else here can be read from it reliably."""
    from agent.periods import last_complete_period

    period_end = last_complete_period(today).end
    used: set[tuple[str, str]] = set()
    for cl in catalogue.codelists:
        used |= cl.pairs()
    clinical = sorted({system for system, _ in used})
    seen: Counter[tuple[str, str]] = Counter()
    unused: list[CodeCount] = []
    other: Counter[str] = Counter()
    tables: dict[str, TableSummary] = {}
    with engine.connect() as conn:
        if source_kind != "omop":
            from agent.sources.form import form_error, malformed

            named = f"the practice database {where} has " if where else "the practice database has "
            error = form_error(
                named, malformed(conn.dialect.name, lambda q: conn.exec_driver_sql(q).all())
            )
            if error is not None:
                raise error
        n_patients = conn.execute(sa.select(sa.func.count()).select_from(patients)).scalar_one()
        p = patients.c
        registered = conn.execute(
            sa.select(sa.func.count())
            .select_from(patients)
            .where(
                p.registration_start <= today,
                sa.or_(p.registration_end.is_(None), p.registration_end > today),
                sa.or_(p.death_date.is_(None), p.death_date > today),
            )
        ).scalar_one()
        # registration_end is the first day no longer registered (OMOP: the day after the
        # observation period's end): on or before period_end, the patient is off the list then.
        left = conn.execute(
            sa.select(sa.func.count())
            .select_from(patients)
            .where(
                p.registration_end.is_not(None),
                p.registration_end <= period_end,
                p.death_date.is_(None),
            )
        ).scalar_one()
        for name, table in (("events", events), ("medications", medications)):
            c = table.c
            try:  # SQLite hands dates back as text, which SQLAlchemy parses as ISO
                rows, first, last = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(c.date), sa.func.max(c.date))
                ).one()
            except ValueError:
                raise _not_iso(f"{name}.date") from None
            by_code = conn.execute(
                sa.select(c.system, c.code, sa.func.count()).group_by(c.system, c.code)
            ).all()
            by_system: Counter[str] = Counter()
            for system, code, n in by_code:
                by_system[system] += n
                seen[(system, code)] += n
                if system not in clinical:
                    other[system] += n
                elif (system, code) not in used:
                    unused.append(CodeCount(table=name, system=system, code=code, rows=n))
            tables[name] = TableSummary(
                rows=rows,
                first_date=_as_date(first, f"{name}.date"),
                last_date=_as_date(last, f"{name}.date"),
                by_system=dict(by_system),
            )
        with_codes = _patients_per_list(conn, catalogue)
        if source_kind == "omop":
            from agent.sources.omop import records_before_birth

            counts = records_before_birth(conn)
        else:
            from agent.sources.birth import practice_before_birth

            counts = practice_before_birth(conn)
        before_birth = {
            table: BeforeBirthCount(rows=n.rows, persons=n.persons) for table, n in counts.items()
        }
    coverage = []
    for k, cl in enumerate(catalogue.codelists):
        pairs = sorted(cl.pairs())
        unseen = [f"{s}:{c}" for s, c in pairs if (s, c) not in seen]
        coverage.append(
            CodelistCoverage(
                id=cl.id,
                cluster=cl.source.cluster,
                patients=with_codes.get(k, 0),
                codes=len(pairs),
                seen=len(pairs) - len(unseen),
                rows=sum(seen[pair] for pair in pairs),
                never_seen=unseen[:MAX_UNSEEN_LISTED],
                never_seen_total=len(unseen),
            )
        )
    unused.sort(key=lambda c: (-c.rows, c.table, c.system, c.code))
    return SourceCheck(
        patients=n_patients,
        registered_now=registered,
        period_end=period_end,
        left_without_death=left,
        source_kind=source_kind,
        tables=tables,
        clinical_systems=clinical,
        unused_codes=unused[:TOP_UNUSED],
        unused_distinct=len(unused),
        other_systems=dict(other),
        codelists=coverage,
        before_birth=before_birth,
    )
