"""Where the SQL dialects differ (the only place).

The rule compiler and the query shape are portable SQLAlchemy Core. What differs is how "the
lowest value on the latest date" per patient and code set is best computed:

* portable (SQLite, PostgreSQL): the latest valued date per (patient, code set), joined back to
  the valued rows for the lowest value on that date;
* DuckDB: one aggregate, ``arg_max(value, (date, -value))`` picks the row with the latest date and,
  among those, the lowest value, with no second pass.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement


class Flavour:
    name = "portable"

    def latest_values(self, hits: sa.CTE, ks: list[int]) -> sa.CTE:
        """One row per patient with ``vdate_k`` (the latest date of a valued row of code set
        ``k``) and ``value_k`` (the lowest value on that date), for every ``k`` in ``ks``."""
        valued = sa.and_(hits.c.value.is_not(None), hits.c.k.in_(ks))
        vlast = (
            sa.select(hits.c.patient_id, hits.c.k, sa.func.max(hits.c.date).label("d"))
            .where(valued)
            .group_by(hits.c.patient_id, hits.c.k)
            .cte("vlast")
        )
        vbest = (
            sa.select(
                vlast.c.patient_id, vlast.c.k, vlast.c.d, sa.func.min(hits.c.value).label("v")
            )
            .select_from(
                hits.join(
                    vlast,
                    sa.and_(
                        hits.c.patient_id == vlast.c.patient_id,
                        hits.c.k == vlast.c.k,
                        hits.c.date == vlast.c.d,
                    ),
                )
            )
            .where(hits.c.value.is_not(None))
            .group_by(vlast.c.patient_id, vlast.c.k, vlast.c.d)
            .cte("vbest")
        )
        return _pivot(vbest.c.patient_id, vbest.c.k, vbest.c.d, vbest.c.v, ks)


class DuckDBFlavour(Flavour):
    name = "duckdb"

    def latest_values(self, hits: sa.CTE, ks: list[int]) -> sa.CTE:
        valued = sa.and_(hits.c.value.is_not(None), hits.c.k.in_(ks))
        order = sa.tuple_(hits.c.date, -hits.c.value)
        best = (
            sa.select(
                hits.c.patient_id,
                hits.c.k,
                sa.func.max(hits.c.date).label("d"),
                sa.func.arg_max(hits.c.value, order, type_=sa.Float).label("v"),
            )
            .where(valued)
            .group_by(hits.c.patient_id, hits.c.k)
            .cte("vbest")
        )
        return _pivot(best.c.patient_id, best.c.k, best.c.d, best.c.v, ks)


def _pivot(
    patient_id: ColumnElement,
    k: ColumnElement,
    d: ColumnElement,
    v: ColumnElement,
    ks: list[int],
) -> sa.CTE:
    cols: list[ColumnElement] = []
    for n in ks:
        cols.append(sa.func.max(sa.case((k == n, d))).label(f"vdate_{n}"))
        cols.append(sa.func.max(sa.case((k == n, v))).label(f"value_{n}"))
    return sa.select(patient_id, *cols).group_by(patient_id).cte("vfeat")


def flavour_for(dialect: sa.Dialect) -> Flavour:
    if dialect.name == "duckdb":
        return DuckDBFlavour()
    return Flavour()
