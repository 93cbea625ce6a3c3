"""Values in a form the engine cannot read, in a practice database supplied as it is: counted per
table and column, refused by every command that computes, and by ``check-source``.

A practice database in the canonical tables that the practice writes itself (docs/sources.md,
"A practice database supplied as it is") was never loaded, so nothing checked its values on the
way in. What the loaders refuse, a rule would read wrongly or not at all: a date that is not one
(``2020-02-30``, ``01/02/2020``, the integer ``20200101``) compares as text, or fails where a
date is read back; a sex outside F, M and U counts in a total but in no stratum; a value that is
text, NaN or infinite compares as no number should (NaN is above every threshold in
PostgreSQL); a patient id that is not an integer stops a worklist. So each is counted here, per
table and column, before the engine runs, and any is a refusal naming the column and the count,
never a row, a patient or a value.

    malformed(dialect, fetch) -> [problem, ...]     "events.date 2 row(s) not a date ..."
    form_error(source, problems) -> SourceError | None

SQLite stores any value in any column, so every row is checked (one scan per table, with the
before-birth check paid once per change of the file: agent/engine/clean.py). DuckDB and
PostgreSQL columns hold their declared type: a column of another type than docs/data-model.md
gives is a problem of its own (``events.date: a VARCHAR column, not a date``), and only what the
type can still hold is counted per row: a sex outside F, M and U and a NaN or infinite value;
on DuckDB, checked once per change of its file, also a date outside years 1-9999 and a missing
patient id. Plain SQL, no SQLAlchemy: a DuckDB practice's
stored statement (agent/engine/stored.py) runs it on a plain ``duckdb`` connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.errors import SourceError

#: The columns checked, by table, and what each must be: "id" a whole number (a patient id),
#: "date" a date (required or not), "sex" F, M or U, "number" a finite number or null.
COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "patients": (
        ("patient_id", "id"),
        ("birth_date", "date"),
        ("sex", "sex"),
        ("registration_start", "date"),
        ("registration_end", "date?"),
        ("death_date", "date?"),
    ),
    "events": (("patient_id", "id"), ("date", "date"), ("value", "number")),
    "medications": (("patient_id", "id"), ("date", "date")),
}

#: What a row that fails each kind is, in the refusal.
PROBLEM = {
    "id": "not a whole number",
    "date": "empty or not a date as YYYY-MM-DD",
    "date?": "not a date as YYYY-MM-DD",
    "sex": "not F, M or U",
    "number": "not a finite number",
}

# SQLite: a date is text that date() gives back unchanged (it normalises 2020-02-30 to
# 2020-03-01, refuses 2020-13-45 and 01/02/2020, and reads an integer as a Julian day), from
# year 1 (Python's first; compared with a full date, which a column of NUMERIC affinity, as a
# DATE column is, leaves as text: '0001' would be compared as the number 1).
_SQLITE = {
    "id": "typeof({c}) <> 'integer'",
    "date": "{c} IS NULL OR date({c}, '+0 days') IS NOT {c} OR {c} < '0001-01-01'",
    "date?": "{c} IS NOT NULL AND (date({c}, '+0 days') IS NOT {c} OR {c} < '0001-01-01')",
    "sex": "{c} IS NULL OR {c} NOT IN ('F', 'M', 'U')",
    "number": (
        "{c} IS NOT NULL AND (typeof({c}) NOT IN ('integer', 'real') "
        "OR abs({c}) > 1.7976931348623157e308)"
    ),
}
# DuckDB and PostgreSQL: what a column of the right type can still hold.
_TYPED = {
    "id": "{c} IS NULL",
    "date": "{c} IS NULL OR NOT ({c} BETWEEN DATE '0001-01-01' AND DATE '9999-12-31')",
    "date?": "NOT ({c} BETWEEN DATE '0001-01-01' AND DATE '9999-12-31')",
    "sex": "{c} IS NULL OR CAST({c} AS VARCHAR) NOT IN ('F', 'M', 'U')",
}
_NOT_FINITE = {
    "duckdb": "NOT isfinite(CAST({c} AS DOUBLE))",
    "postgresql": (
        "CAST({c} AS double precision) IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"
    ),
}

_TYPES_SQL = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name IN ('patients', 'events', 'medications')"
)
_INTEGERS = {
    "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT",
    "UTINYINT", "UHUGEINT", "INT8", "INT4", "INT2",
}  # fmt: skip
_FLOATS = {"DOUBLE", "FLOAT", "REAL", "DOUBLE PRECISION"}


def _type_of(kind: str, declared: str) -> str | None:
    """Why a column declared ``declared`` cannot hold a ``kind`` value, or None if it can."""
    t = declared.upper()
    if kind in ("date", "date?"):
        ok = t == "DATE" or t.startswith("TIMESTAMP")
        want = "a date"
    elif kind == "id":
        ok, want = t in _INTEGERS, "an integer"
    elif kind == "number":
        ok = t in _INTEGERS or t in _FLOATS or t.startswith(("DECIMAL", "NUMERIC"))
        want = "a number"
    else:
        return None  # sex: any type, compared as text
    return None if ok else f"a {declared} column, not {want}"


def malformed(dialect: str, fetch: Callable[[str], Sequence[Sequence[Any]]]) -> list[str]:
    """Each column of the canonical tables holding a value not in its form, as
    ``table.column N row(s) <what>`` or ``table.column: a <TYPE> column, not <what>``; empty if
    none. ``dialect``: "sqlite", "duckdb" or "postgresql" (another is not checked);
    ``fetch(sql)`` runs one statement and returns its rows. Counts only."""
    if dialect not in ("sqlite", "duckdb", "postgresql"):
        return []
    types: dict[tuple[str, str], str] | None = None
    if dialect != "sqlite":
        types = {(str(t), str(c)): str(d) for t, c, d in fetch(_TYPES_SQL)}
    found: list[str] = []
    for table, columns in COLUMNS.items():
        checks: list[tuple[str, str, str]] = []  # (label, kind, condition)
        for column, kind in columns:
            label = f"{table}.{column}"
            c = f'"{column}"'
            if types is None:
                checks.append((label, kind, _SQLITE[kind].format(c=c)))
                continue
            declared = types.get((table, column))
            if declared is None:
                continue  # no such column: the engine's statement names it
            wrong = _type_of(kind, declared)
            if wrong is not None:
                found.append(f"{label}: {wrong}")
            elif kind == "number":
                if declared.upper() in _FLOATS or declared.upper().startswith("NUMERIC"):
                    checks.append((label, kind, _NOT_FINITE[dialect].format(c=c)))
            elif dialect == "duckdb" or kind == "sex":
                # PostgreSQL is checked on every command (it has no file whose change tells):
                # there only what a rule would silently misread, a sex or a value, is counted
                # per row (its events scan about 0.3 s on 7 million rows); a date out of
                # Python's range or a missing patient id stops a command or drops a row.
                checks.append((label, kind, _TYPED[kind].format(c=c)))
        if not checks:
            continue
        # One count of the rows with any problem (where nothing is wrong, the only statement;
        # PostgreSQL evaluates it cheaper than one count per column), then one per column.
        anything = " OR ".join(f"({cond})" for _, _, cond in checks)
        if not fetch(f'SELECT count(*) FROM "{table}" WHERE {anything}')[0][0]:
            continue
        counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, _, cond in checks)
        row = fetch(f'SELECT {counts} FROM "{table}"')[0]
        found += [
            f"{label} {int(n)} row(s) {PROBLEM[kind]}"
            for (label, kind, _), n in zip(checks, row, strict=True)
            if n
        ]
    return found


def form_error(source: str, problems: Sequence[str]) -> SourceError | None:
    """The refusal of a database with values not in their form, or None if it has none:
    ``source`` begins the message (which database), then each column and how many rows."""
    if not problems:
        return None
    return SourceError(
        f"{source}values not in the form docs/data-model.md gives them: {'; '.join(problems)}. "
        "A rule would read them wrongly or not at all, so nothing is computed from this database "
        "until they are corrected in it (docs/sources.md shows how to list them)"
    )
