"""benchmark tables (derived statistics, rebuilt from cells)

Revision ID: b001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "b001"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bench_stale",
        sa.Column("indicator", sa.String(32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("mark", sa.Integer(), nullable=False),
        sa.Column("marked_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("indicator", "period_start", "period_end", name="pk_bench_stale"),
    )
    op.create_table(
        "bench_summary",
        sa.Column("indicator", sa.String(32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("indicator_version", sa.Integer(), nullable=True),
        sa.Column("versions", sa.String(200), nullable=False),
        sa.Column("practices", sa.Integer(), nullable=False),
        sa.Column("included", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.Column("empty", sa.Integer(), nullable=False),
        sa.Column("rounded", sa.Integer(), nullable=False),
        sa.Column("numerator", sa.Integer(), nullable=False),
        sa.Column("denominator", sa.Integer(), nullable=False),
        sa.Column("pooled", sa.Float(), nullable=True),
        sa.Column("pooled_lo95", sa.Float(), nullable=True),
        sa.Column("pooled_hi95", sa.Float(), nullable=True),
        sa.Column("median", sa.Float(), nullable=True),
        sa.Column("q1", sa.Float(), nullable=True),
        sa.Column("q3", sa.Float(), nullable=True),
        sa.Column("deciles", sa.Text(), nullable=True),
        sa.Column("phi", sa.Float(), nullable=True),
        sa.Column("dispersion_statistic", sa.Float(), nullable=True),
        sa.Column("dispersion_p", sa.Float(), nullable=True),
        sa.Column("overdispersed", sa.Boolean(), nullable=False),
        sa.Column("tau2", sa.Float(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("abc", sa.Float(), nullable=True),
        sa.Column("abc_practices", sa.Integer(), nullable=False),
        sa.Column("computed_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("indicator", "period_start", "period_end", name="pk_bench_summary"),
    )
    op.create_table(
        "bench_practice",
        sa.Column("indicator", sa.String(32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("practice_ods", sa.String(6), nullable=False),
        sa.Column("submission_id", sa.String(36), nullable=False),
        sa.Column("indicator_version", sa.Integer(), nullable=True),
        sa.Column("numerator", sa.Integer(), nullable=True),
        sa.Column("numerator_status", sa.String(10), nullable=False),
        sa.Column("denominator", sa.Integer(), nullable=True),
        sa.Column("denominator_status", sa.String(10), nullable=False),
        sa.Column("exclusions", sa.Integer(), nullable=True),
        sa.Column("exclusions_status", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("lo95", sa.Float(), nullable=True),
        sa.Column("hi95", sa.Float(), nullable=True),
        sa.Column("lo998", sa.Float(), nullable=True),
        sa.Column("hi998", sa.Float(), nullable=True),
        sa.Column("approximate", sa.Boolean(), nullable=False),
        sa.Column("z", sa.Float(), nullable=True),
        sa.Column("band", sa.String(10), nullable=True),
        sa.Column("limit_low_95", sa.Float(), nullable=True),
        sa.Column("limit_high_95", sa.Float(), nullable=True),
        sa.Column("limit_low_998", sa.Float(), nullable=True),
        sa.Column("limit_high_998", sa.Float(), nullable=True),
        sa.Column("note", sa.String(40), nullable=True),
        sa.Column("item_json", sa.Text(), nullable=False),
        sa.Column("peer_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "indicator", "period_start", "period_end", "practice_ods", name="pk_bench_practice"
        ),
    )
    op.create_index(
        "ix_bench_practice_practice", "bench_practice", ["practice_ods", "indicator", "period_end"]
    )


def downgrade() -> None:
    op.drop_index("ix_bench_practice_practice", table_name="bench_practice")
    op.drop_table("bench_practice")
    op.drop_table("bench_summary")
    op.drop_table("bench_stale")
