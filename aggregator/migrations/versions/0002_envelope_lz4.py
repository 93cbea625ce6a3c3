"""envelope bodies and receipts compressed with lz4 on PostgreSQL

Revision ID: 0002
Revises: b001

PostgreSQL compresses a large value before storing it out of line (TOAST), with pglz unless told
otherwise. A submission envelope is about 100 KB: pglz cost about 0.95 ms of database CPU for
each, lz4 about 0.45 ms, for the same stored size (measured in docs/benchmarks.md). lz4 needs
PostgreSQL 14 or later built with lz4 (Debian's and the official images are); on a server
without it, and on SQLite, this migration changes nothing. Values already stored keep their
compression; only new ones use lz4.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "b001"
branch_labels = None
depends_on = None

COLUMNS = (("envelopes", "body"), ("envelopes", "receipt"))


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    found = bind.execute(
        sa.text(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
    ).first()
    return found is not None


def upgrade() -> None:
    if _lz4_available():
        for table, column in COLUMNS:
            op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION lz4')


def downgrade() -> None:
    if _lz4_available():
        for table, column in COLUMNS:
            op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION default')
