"""practices.visibility: how the practice lets the network show its values

Revision ID: 0004
Revises: 0003

Chosen by the practice in its agent settings and carried in its signed submissions; the
aggregator keeps the latest (``named``, ``pseudonymised`` or ``totals_only``) and the submission
that set it. Existing practices are ``named``: what the network showed before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("practices") as batch:
        batch.add_column(
            sa.Column("visibility", sa.String(20), nullable=False, server_default="named")
        )
        batch.add_column(sa.Column("visibility_since", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("practices") as batch:
        batch.drop_column("visibility_since")
        batch.drop_column("visibility")
