"""cells: one row per indicator (the total in columns, the other strata as compact JSON)

Revision ID: 0003
Revises: 0002

A submission of 40 indicators with 9 strata each wrote 360 ``cells`` rows; on PostgreSQL their
primary-key and foreign-key checks were most of the database's CPU per submission. Now each
indicator is one row: the whole-practice cell (age band ``all``, sex ``all``) in the columns
benchmarks read, the other strata in ``strata`` as
``[[age_band, sex, denominator, denominator_status, numerator, numerator_status, exclusions,
exclusions_status], ...]`` (aggregator/db/cells.py; readers do not rely on their order).

Stored cells are moved, not recomputed: upgrade folds each indicator's rows into one, downgrade
unfolds them, both in one transaction, streaming the old table in order (a national store of
several million cells takes minutes). The conversion is written out here rather than imported,
so this migration keeps working whatever the application code becomes.
"""

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COUNTS = (
    "denominator",
    "denominator_status",
    "numerator",
    "numerator_status",
    "exclusions",
    "exclusions_status",
)
PER_STRATUM = ("submission_id", "indicator", "age_band", "sex", *COUNTS)
PER_INDICATOR = ("submission_id", "indicator", *COUNTS, "strata")
CHUNK = 5000


def _count_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("denominator", sa.Integer(), nullable=True),
        sa.Column("denominator_status", sa.String(length=10), nullable=False),
        sa.Column("numerator", sa.Integer(), nullable=True),
        sa.Column("numerator_status", sa.String(length=10), nullable=False),
        sa.Column("exclusions", sa.Integer(), nullable=True),
        sa.Column("exclusions_status", sa.String(length=10), nullable=False),
    ]


def _fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["submission_id"],
        ["submissions.submission_id"],
        name="fk_cells_submission_id_submissions",
    )


def _park(old_name: str) -> None:
    """Rename ``cells`` out of the way; on PostgreSQL its constraint names too (an index name,
    like the primary key's, is unique in the schema)."""
    op.rename_table("cells", old_name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'ALTER TABLE {old_name} RENAME CONSTRAINT pk_cells TO "pk_{old_name}"')
        op.execute(
            f"ALTER TABLE {old_name} RENAME CONSTRAINT fk_cells_submission_id_submissions "
            f'TO "fk_{old_name}_submission_id"'
        )


def _stream(table: str, columns: Sequence[str], order: Sequence[str]) -> Iterator[Any]:
    t = sa.table(table, *(sa.column(c) for c in columns))
    query = sa.select(*(t.c[c] for c in columns)).order_by(*(t.c[c] for c in order))
    result = op.get_bind().execute(query.execution_options(yield_per=CHUNK))
    for part in result.partitions():
        yield from part


def _insert(table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]) -> None:
    t = sa.table(table, *(sa.column(c) for c in columns))
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(dict(zip(columns, row, strict=True)))
        if len(chunk) >= CHUNK:
            op.get_bind().execute(t.insert(), chunk)
            chunk = []
    if chunk:
        op.get_bind().execute(t.insert(), chunk)


def _folded() -> Iterator[tuple[Any, ...]]:
    key: tuple[str, str] | None = None
    total: tuple[Any, ...] | None = None
    strata: list[list[Any]] = []

    def row() -> tuple[Any, ...]:
        if total is None:
            raise RuntimeError(f"cells of {key}: no whole-practice cell ('all', 'all')")
        return (*key, *total, json.dumps(strata, separators=(",", ":")))  # type: ignore[misc]

    for sid, ind, band, sex, *counts in _stream("cells_v1", PER_STRATUM, PER_STRATUM[:4]):
        if (sid, ind) != key:
            if key is not None:
                yield row()
            key, total, strata = (sid, ind), None, []
        if (band, sex) == ("all", "all"):
            total = tuple(counts)
        else:
            strata.append([band, sex, *counts])
    if key is not None:
        yield row()


def _unfolded() -> Iterator[tuple[Any, ...]]:
    for sid, ind, *total, strata in _stream("cells_v2", PER_INDICATOR, PER_INDICATOR[:2]):
        yield (sid, ind, "all", "all", *total)
        for band, sex, *counts in json.loads(strata):
            yield (sid, ind, band, sex, *counts)


def upgrade() -> None:
    _park("cells_v1")
    op.create_table(
        "cells",
        sa.Column("submission_id", sa.String(length=36), nullable=False),
        sa.Column("indicator", sa.String(length=32), nullable=False),
        *_count_columns(),
        sa.Column("strata", sa.Text(), nullable=False),
        _fk(),
        sa.PrimaryKeyConstraint("submission_id", "indicator", name="pk_cells"),
    )
    _insert("cells", PER_INDICATOR, _folded())
    op.drop_table("cells_v1")


def downgrade() -> None:
    _park("cells_v2")
    op.create_table(
        "cells",
        sa.Column("submission_id", sa.String(length=36), nullable=False),
        sa.Column("indicator", sa.String(length=32), nullable=False),
        sa.Column("age_band", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=3), nullable=False),
        *_count_columns(),
        _fk(),
        sa.PrimaryKeyConstraint("submission_id", "indicator", "age_band", "sex", name="pk_cells"),
    )
    _insert("cells", PER_STRATUM, _unfolded())
    op.drop_table("cells_v2")
