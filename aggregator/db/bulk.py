"""Bulk writes, the one place that differs by dialect. Inserts: PostgreSQL gets binary COPY
(several times faster than row inserts for a batch's hundreds of cell rows); others
executemany. Updates of one column by key: PostgreSQL gets one statement over arrays (unnest);
others executemany.

Binary, not text, COPY: an envelope's ~100 KB body in text COPY is written out as hex and
escaped by the client, then parsed back by the server, which cost more CPU than the rest of
the batch's rows together (docs/benchmarks.md, "Binary COPY"). Binary COPY needs each column's
type: they are read from the database's own catalogue (what the migrations made), once per
connection and table.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

# driver connection -> {(table, columns): type oids}
_TYPES: weakref.WeakKeyDictionary[Any, dict[tuple[str, tuple[str, ...]], list[int]]] = (
    weakref.WeakKeyDictionary()
)


def insert_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        raw = conn.connection.driver_connection
        assert raw is not None  # a live psycopg connection
        oids = _column_types(raw, table.name, tuple(columns))
        cols = ", ".join(f'"{c}"' for c in columns)
        with (
            raw.cursor() as cur,
            cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN (FORMAT BINARY)') as copy,
        ):
            copy.set_types(oids)
            for row in rows:
                copy.write_row(row)
        return
    conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def update_rows(
    session: Session,
    table: Table,
    key: str,
    column: str,
    pairs: Sequence[tuple[Any, Any]],
    *,
    where: Mapping[str, Any] | None = None,
) -> None:
    """Set ``column`` to each pair's value in the row whose ``key`` is the pair's key (keys
    unique among the rows that also have each ``where`` column equal to its value)."""
    if not pairs:
        return
    conn = session.connection()
    fixed = tuple(sorted(where or {}))
    same = {f"w_{c}": (where or {})[c] for c in fixed}
    conn.execute(
        _update_statement(table, key, column, conn.dialect.name, fixed),
        {"keys": [k for k, _ in pairs], "values": [v for _, v in pairs], **same}
        if conn.dialect.name == "postgresql"
        else [{"k": k, "v": v, **same} for k, v in pairs],
    )


@lru_cache(maxsize=16)
def _update_statement(
    table: Table, key: str, column: str, dialect: str, fixed: tuple[str, ...] = ()
) -> Any:
    t = table
    also = [t.c[c] == bindparam(f"w_{c}") for c in fixed]
    if dialect != "postgresql":
        return t.update().where(t.c[key] == bindparam("k"), *also).values({column: bindparam("v")})
    given = (
        func.unnest(
            bindparam("keys", type_=ARRAY(t.c[key].type)),
            bindparam("values", type_=ARRAY(t.c[column].type)),
        )
        .table_valued("k", "v")
        .render_derived(name="given")
    )
    return t.update().where(t.c[key] == given.c.k, *also).values({column: given.c.v})


def _column_types(raw: Any, table: str, columns: tuple[str, ...]) -> list[int]:
    """The type oids of ``table``'s ``columns``, in that order, as the database has them."""
    known = _TYPES.setdefault(raw, {})
    hit = known.get((table, columns))
    if hit is not None:
        return hit
    found = dict(
        raw.execute(
            "SELECT attname, atttypid::int FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (f'"{table}"',),
        ).fetchall()
    )
    missing = [c for c in columns if c not in found]
    if missing:
        raise LookupError(f"table {table} has no column {', '.join(missing)}")
    oids = [int(found[c]) for c in columns]
    known[(table, columns)] = oids
    return oids
