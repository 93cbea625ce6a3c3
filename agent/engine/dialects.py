"""Where the SQL dialects differ (the only place).

The rule compiler and the query shape are portable SQLAlchemy Core. What differs is how "the
lowest value on the latest valued date" per patient and code set is computed:

* portable (SQLite, PostgreSQL): the latest valued date per (patient, code set) comes from the
  per-set aggregation; the valued hits on that date are joined back for the lowest value (a
  second pass over the hits, which those engines materialise once);
* DuckDB: one aggregate in the same per-set pass, ``arg_max(value, (date, -value))``: the row
  with the latest date and, among those, the lowest value.

And how the table of codes to match (``system, code, k``: thousands of rows with the national
clusters) reaches the engine: as one bound string the engine splits itself (DuckDB and
PostgreSQL: ``unnest(string_split(...))`` / ``unnest(string_to_array(...))``; SQLite:
``json_each``), since rendering a VALUES list of every code costs more than the query
(docs/benchmarks.md); a VALUES list elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

CodeRow = tuple[str, str, int]


def _code_columns(
    system: ColumnElement[Any], code: ColumnElement[Any], k: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    return [
        sa.cast(system, sa.String).label("system"),
        sa.cast(code, sa.String).label("code"),
        sa.cast(k, sa.Integer).label("k"),
    ]


def _joined(rows: list[CodeRow]) -> str:
    # Codes match [A-Za-z0-9.-] and systems are fixed words (protocol.catalogue), so neither
    # "|" nor "," can occur inside a field.
    return ",".join(f"{system}|{code}|{k}" for system, code, k in rows)


class Flavour:
    name = "portable"
    # Several period ends: carry each patient's features forward from bucket to bucket
    # (compiler._carried_feature_columns), rather than joining every bucket to every later
    # period end and aggregating (compiler._per_period_sets).
    carries_forward = False

    def code_table(self, name: str, rows: list[CodeRow]) -> sa.CTE:
        """A table ``(system, code, k)`` of the codes to match."""
        return (
            sa.values(
                sa.column("system", sa.String),
                sa.column("code", sa.String),
                sa.column("k", sa.Integer),
                name=name,
                literal_binds=True,
            )
            .data(rows)
            .cte(name)
        )

    def stage_value_columns(self, hits: sa.CTE) -> list[ColumnElement[Any]]:
        """Extra aggregates for the per-(patient, code set) pass."""
        return []

    def lowest_value_on_latest_date(
        self, hits: sa.CTE, per_set: sa.CTE, per_period: bool = False
    ) -> tuple[sa.FromClause, ColumnElement[Any]]:
        """The FROM clause to pivot ``per_set`` from, and the column holding the lowest value on
        ``per_set.vdate`` (null where the set has no valued hit). ``per_period``: ``per_set``
        has a row per period end too (its ``pidx``)."""
        keys = [per_set.c.patient_id, per_set.c.k] + ([per_set.c.pidx] if per_period else [])
        best = (
            sa.select(*keys, sa.func.min(hits.c.value).label("v"))
            .select_from(
                hits.join(
                    per_set,
                    sa.and_(
                        hits.c.patient_id == per_set.c.patient_id,
                        hits.c.k == per_set.c.k,
                        hits.c.date == per_set.c.vdate,
                    ),
                )
            )
            .where(hits.c.value.is_not(None))
            .group_by(*keys)
            .cte("lowest")
        )
        on = [best.c.patient_id == per_set.c.patient_id, best.c.k == per_set.c.k]
        if per_period:
            on.append(best.c.pidx == per_set.c.pidx)
        source = per_set.outerjoin(best, sa.and_(*on))
        return source, best.c.v


class _SplitFlavour(Flavour):
    split = "string_split"

    def code_table(self, name: str, rows: list[CodeRow]) -> sa.CTE:
        text = sa.bindparam(f"{name}_text", _joined(rows), type_=sa.String)
        items = (
            sa.func.unnest(getattr(sa.func, self.split)(text, ","))
            .table_valued("x")
            .render_derived()
        )
        x = items.c.x
        part = sa.func.split_part
        cols = _code_columns(part(x, "|", 1), part(x, "|", 2), part(x, "|", 3))
        return sa.select(*cols).select_from(items).cte(name)


class PostgresFlavour(_SplitFlavour):
    name = "postgresql"
    split = "string_to_array"


class SQLiteFlavour(Flavour):
    name = "sqlite"

    def code_table(self, name: str, rows: list[CodeRow]) -> sa.CTE:
        text = sa.bindparam(f"{name}_json", json.dumps(rows), type_=sa.String)
        items = sa.func.json_each(text).table_valued("value")
        v = items.c.value
        extract = sa.func.json_extract
        cols = _code_columns(extract(v, "$[0]"), extract(v, "$[1]"), extract(v, "$[2]"))
        return sa.select(*cols).select_from(items).cte(name)


class DuckDBFlavour(_SplitFlavour):
    name = "duckdb"
    carries_forward = True  # needs arg_max

    def stage_value_columns(self, hits: sa.CTE) -> list[ColumnElement[Any]]:
        # Only valued rows count. A FILTER clause costs less than a key that is NULL where
        # there is no value (which arg_max skips): 5% of the whole catalogue's query on the
        # 30,000-patient practice (docs/benchmarks.md).
        key = sa.tuple_(hits.c.date, -hits.c.value)
        arg = sa.func.arg_max(hits.c.value, key, type_=sa.Float)
        return [arg.filter(hits.c.value.is_not(None)).label("v")]

    def lowest_value_on_latest_date(
        self, hits: sa.CTE, per_set: sa.CTE, per_period: bool = False
    ) -> tuple[sa.FromClause, ColumnElement[Any]]:
        return per_set, per_set.c.v


def flavour_for(dialect: sa.Dialect) -> Flavour:
    if dialect.name == "duckdb":
        return DuckDBFlavour()
    if dialect.name == "postgresql":
        return PostgresFlavour()
    if dialect.name == "sqlite":
        return SQLiteFlavour()
    return Flavour()
