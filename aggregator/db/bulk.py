"""Bulk inserts, the one place that differs by dialect: PostgreSQL gets binary COPY (several
times faster than row inserts for a batch's hundreds of cell rows); others executemany.

Binary, not text, COPY: an envelope's ~100 KB body in text COPY is written out as hex and
escaped by the client, then parsed back by the server, which cost more CPU than the rest of
the batch's rows together (docs/benchmarks.md, "Binary COPY"). Binary COPY needs each column's
type: they are read from the database's own catalogue (what the migrations made), once per
connection and table.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
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
