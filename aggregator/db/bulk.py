"""Bulk inserts, the one place that differs by dialect: PostgreSQL gets COPY (an order of
magnitude faster than row inserts for a submission's hundreds of cells); others executemany."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session


def insert_rows(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        raw = conn.connection.driver_connection
        cols = ", ".join(f'"{c}"' for c in columns)
        with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        return
    conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def has_copy(session: Session) -> bool:
    """Whether :func:`copy_text` works here (PostgreSQL through psycopg)."""
    dialect = session.get_bind().dialect
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def copy_text(session: Session, table: Table, columns: Sequence[str], text: str) -> None:
    """COPY ``text``, already in COPY's text format (tab-separated, one row per line, ``\\N``
    for null), in one write (see :func:`has_copy`). The caller guarantees that no value needs
    escaping."""
    conn = session.connection()
    raw = conn.connection.driver_connection
    cols = ", ".join(f'"{c}"' for c in columns)
    with raw.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as copy:
        copy.write(text)
