"""cells.verdict: the ingest's seal on each stored cells row

Revision ID: 0007
Revises: 0006

A 16-byte HMAC over the row's values and its submission's id, practice, key id, envelope
SHA-256 and period, under a key derived from the log's signing key (never stored here;
aggregator/log/verdict.py). The benchmark refresh checks it instead of re-reading the envelope.
Rows stored before this revision have none, and are checked against their envelopes as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.add_column(sa.Column("verdict", sa.LargeBinary(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("verdict")
