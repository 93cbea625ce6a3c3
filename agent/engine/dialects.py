"""Where the SQL dialects differ (the only place).

The rule compiler and the query shape are portable SQLAlchemy Core. What differs is how "the
lowest value on the latest valued date" per patient and code set is computed:

* portable (SQLite, PostgreSQL): the latest valued date per (patient, code set) comes from the
  per-set aggregation; the valued hits on that date are joined back for the lowest value (a
  second pass over the hits, which those engines materialise once);
* DuckDB: one aggregate in the same per-set pass, ``arg_max(value, (date, -value))``: the row
  with the latest date and, among those, the lowest value.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


class Flavour:
    name = "portable"

    def stage_value_columns(self, hits: sa.CTE) -> list[ColumnElement]:
        """Extra aggregates for the per-(patient, code set) pass."""
        return []

    def lowest_value_on_latest_date(
        self, hits: sa.CTE, per_set: sa.CTE
    ) -> tuple[sa.FromClause, ColumnElement]:
        """The FROM clause to pivot ``per_set`` from, and the column holding the lowest value on
        ``per_set.vdate`` (null where the set has no valued hit)."""
        best = (
            sa.select(per_set.c.patient_id, per_set.c.k, sa.func.min(hits.c.value).label("v"))
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
            .group_by(per_set.c.patient_id, per_set.c.k)
            .cte("lowest")
        )
        source = per_set.outerjoin(
            best, sa.and_(best.c.patient_id == per_set.c.patient_id, best.c.k == per_set.c.k)
        )
        return source, best.c.v


class DuckDBFlavour(Flavour):
    name = "duckdb"

    def stage_value_columns(self, hits: sa.CTE) -> list[ColumnElement]:
        # Rows without a value get a NULL key, which arg_max skips.
        key = sa.case((hits.c.value.is_not(None), sa.tuple_(hits.c.date, -hits.c.value)))
        return [sa.func.arg_max(hits.c.value, key, type_=sa.Float).label("v")]

    def lowest_value_on_latest_date(
        self, hits: sa.CTE, per_set: sa.CTE
    ) -> tuple[sa.FromClause, ColumnElement]:
        return per_set, per_set.c.v


def flavour_for(dialect: sa.Dialect) -> Flavour:
    if dialect.name == "duckdb":
        return DuckDBFlavour()
    return Flavour()
