"""Records dated before their patient's birth: counted per table, refused by every command that
computes, reported by ``check-source``.

A record cannot precede the patient's birth, and a rule would count one silently. The loaders
(``load-csv``, ``load-fhir``) refuse such a record, naming its file and line; a database read as
it is, an OMOP CDM database (:mod:`agent.sources.omop`) or a practice database in the canonical
tables (:mod:`agent.sources.schema`) that a practice supplies itself, is checked here instead:
per dated table, how many rows are dated before their person's birth and of how many persons.
Counts only: no row, person or date is returned, and the refusal names none.

    birth_check(dated, person, key, birth) -> BirthCheck    the statements, for any schema
    count_before_birth(check, first_row) -> {label: BeforeBirth}
    before_birth_error(source, dated, counts, person=..., birth=...) -> SourceError | None
    practice_check(dialect), practice_error(where, counts)  the canonical tables'

Where nothing is wrong the check is one statement: each person's earliest date in each table (a
grouping over one scan of the table, no per-row date arithmetic) compared with their birth, or,
where that is the cheaper (a practice database on SQLite), each row's date; rows are counted
only in a table where a person has one, so the refusal, not the common case, pays for the
count. Nothing here imports SQLAlchemy at module level: a DuckDB practice's stored
statement (agent/engine/stored.py) runs the canonical check, compiled once, on a plain
``duckdb`` connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from agent.errors import SourceError

if TYPE_CHECKING:
    import sqlalchemy as sa


class BeforeBirth(NamedTuple):
    """A table's rows dated before their person's birth, and the persons they are of."""

    rows: int
    persons: int


class Dated(NamedTuple):
    """A table's date column, checked against its person's birth."""

    table: str
    column: str


Q = TypeVar("Q")
R = TypeVar("R")


@dataclass(frozen=True)
class BirthCheck(Generic[Q]):
    """The statements of a check: ``persons`` is one statement whose one row gives, for each
    label of ``dated`` in order, how many persons have a row dated before their birth;
    ``rows[label]`` how many rows, run only for a label with such a person. ``Q`` is a
    SQLAlchemy select, or its SQL compiled for a plain connection (:meth:`map`)."""

    dated: dict[str, Dated]
    persons: Q
    rows: dict[str, Q]

    def map(self, f: Callable[[Q], R]) -> BirthCheck[R]:
        return BirthCheck(self.dated, f(self.persons), {k: f(q) for k, q in self.rows.items()})


def birth_check(
    dated: Mapping[str, Dated],
    person: sa.TableClause,
    key: str,
    birth: sa.ColumnElement[Any],
    schema: str | None = None,
    *,
    per_row: bool = False,
) -> BirthCheck[sa.Select[Any]]:
    """The check of ``dated`` against ``birth`` (an expression over ``person``'s columns),
    each dated table joined to ``person`` on the column ``key`` that both have. A dated table
    may be ``person`` itself (a date of the patient's own, such as a death).

    The persons are counted from each person's earliest date (a grouping) compared with their
    birth, or, with ``per_row``, from the rows whose own date is before it: the same counts,
    and which is the cheaper depends on the database (:func:`practice_check`)."""
    import sqlalchemy as sa

    persons = []
    rows = {}
    for i, (label, d) in enumerate(dated.items()):
        t = sa.table(d.table, sa.column(key), sa.column(d.column), schema=schema).alias(f"d{i}")
        if per_row:
            count = (
                sa.select(sa.func.count(sa.distinct(t.c[key])))
                .select_from(t.join(person, person.c[key] == t.c[key]))
                .where(t.c[d.column] < birth)
            )
        else:
            first = (
                sa.select(t.c[key], sa.func.min(t.c[d.column]).label("first"))
                .group_by(t.c[key])
                .subquery(f"first_{i}")
            )
            count = (
                sa.select(sa.func.count())
                .select_from(first.join(person, person.c[key] == first.c[key]))
                .where(first.c.first < birth)
            )
        persons.append(count.scalar_subquery().label(f"persons_{i}"))
        rows[label] = (
            sa.select(sa.func.count())
            .select_from(t.join(person, person.c[key] == t.c[key]))
            .where(t.c[d.column] < birth)
        )
    return BirthCheck(dict(dated), sa.select(*persons), rows)


def count_before_birth(
    check: BirthCheck[Q], first_row: Callable[[Q], Sequence[Any] | None]
) -> dict[str, BeforeBirth]:
    """Run ``check`` (``first_row`` executes one of its statements and returns its first
    row): for each label, the rows dated before their person's birth and of how many persons."""
    found = first_row(check.persons) or ()
    out = {}
    for label, n_persons in zip(check.dated, found, strict=True):
        n_rows = 0
        if n_persons:
            (n_rows,) = first_row(check.rows[label]) or (0,)
        out[label] = BeforeBirth(rows=int(n_rows), persons=int(n_persons))
    return out


def before_birth_error(
    source: str,
    dated: Mapping[str, Dated],
    counts: Mapping[str, BeforeBirth],
    *,
    person: str,
    birth: str,
) -> SourceError | None:
    """The refusal of a database with rows dated before their person's birth, or None if it
    has none: ``source`` names the database (the message's start), then each table, its date
    column and how many rows of how many persons, never a row, a person or a date (the
    loaders name the first such record's file and line, which a database has not)."""
    found = [
        f"{dated[label].table}.{dated[label].column} {n.rows} row(s) of {n.persons} person(s)"
        for label, n in counts.items()
        if n.rows
    ]
    if not found:
        return None
    return SourceError(
        f"{source}rows dated before their {person}'s birth ({birth}): {'; '.join(found)}. A "
        "record cannot precede the patient's birth, so nothing is computed from this database "
        "until they are corrected in it (check-source counts them; docs/sources.md shows how to "
        "list them)"
    )


#: The version of what the practice check refuses (:data:`PRACTICE_DATED`, each against
#: ``birth_date``, and, since version 2, values not in their form: agent/sources/form.py). A
#: practice database file found clean is recorded with it in the agent home
#: (agent/engine/clean.py) and not checked again until it changes; a record of another version
#: is ignored. Raise it whenever a change to the check could refuse a database it passed.
PRACTICE_CHECK_VERSION = 2

#: What is checked in the canonical tables: each clinical table's date, and the patient's
#: registration start and death, as load-csv and load-fhir check them.
PRACTICE_DATED: dict[str, Dated] = {
    "events": Dated("events", "date"),
    "medications": Dated("medications", "date"),
    "patients.registration_start": Dated("patients", "registration_start"),
    "patients.death_date": Dated("patients", "death_date"),
}


def practice_check(dialect: str) -> BirthCheck[sa.Select[Any]]:
    """The check of a practice database in the canonical tables, against ``birth_date``, for
    the database ``dialect`` (its SQLAlchemy name).

    On SQLite the persons are counted per row: SQLite groups through a temporary B-tree, so
    grouping 7 million events by patient costs more (1.8-2.1 s of CPU on 30,000 patients) than
    looking each row's birth date up by the primary key (1.5-1.6 s). DuckDB and PostgreSQL group
    by hashing: there the grouping is the cheaper (58 against 78 ms on DuckDB;
    docs/benchmarks.md, "The before-birth check on a practice database")."""
    import sqlalchemy as sa

    patients = sa.table("patients", sa.column("patient_id"), sa.column("birth_date"))
    return birth_check(
        PRACTICE_DATED,
        patients,
        "patient_id",
        patients.c.birth_date,
        per_row=dialect == "sqlite",
    )


def practice_before_birth(conn: sa.Connection) -> dict[str, BeforeBirth]:
    """For each entry of :data:`PRACTICE_DATED`, the rows dated before the patient's
    ``birth_date`` and of how many patients. Counts only."""
    check = practice_check(conn.dialect.name)
    return count_before_birth(check, lambda q: conn.execute(q).one())


def practice_error(where: str, counts: Mapping[str, BeforeBirth]) -> SourceError | None:
    """The refusal of the practice database ``where`` (its path, or its URL without the
    password), worded as the other errors opening it are; None if nothing is before birth."""
    return before_birth_error(
        f"source.url: the practice database {where} has ",
        PRACTICE_DATED,
        counts,
        person="patient",
        birth="patients.birth_date",
    )
