"""benchmarks from a period's counts: submissions.counts, bench_entries for bench_practice

Revision ID: 0010
Revises: 0009

A refresh no longer writes a row per practice and group (6,240,000 rows for a national refresh
of 24 months): each submission carries its whole-practice counts as one sealed value
(``submissions.counts``, ``counts_verdict``; aggregator/db/counts.py), a refresh reads a period's
values once and stores, per group, its summary (with ``flagged``: the submissions it showed as
unverified or suspect) and its practices' counts as one compact value (``bench_entries``); each
practice's rate, intervals, z and band are computed when read (docs/benchmarks.md). Submissions
stored before this revision have no counts value: the refresh reads their cells as before
(verdicts, then envelopes) and, where every cell holds, seals a value for them, once. Every
group with a summary is queued stale, so each is stored again in the new form; ``bench_practice``
is dropped (derived data: the downgrade creates it empty and queues every group again).
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

QUEUE_ALL = sa.text(
    "INSERT INTO bench_stale (indicator, period_start, period_end, mark, marked_at) "
    "SELECT s.indicator, s.period_start, s.period_end, 1, CURRENT_TIMESTAMP "
    "FROM bench_summary s WHERE NOT EXISTS (SELECT 1 FROM bench_stale q "
    "WHERE q.indicator = s.indicator AND q.period_start = s.period_start "
    "AND q.period_end = s.period_end)"
)


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("counts", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("counts_verdict", sa.LargeBinary(16), nullable=True))
    with op.batch_alter_table("bench_summary") as batch:
        batch.add_column(sa.Column("flagged", sa.Text(), nullable=True))
    op.create_table(
        "bench_entries",
        sa.Column("indicator", sa.String(32), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("practices", sa.Text(), nullable=False),
        sa.Column("submissions", sa.LargeBinary(), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("indicator", "period_start", "period_end", name="pk_bench_entries"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Stored out of line uncompressed: the ids do not compress, and a refresh writes 40 of
        # these a national period; compressing them cost the database more than it saved.
        for column in ("numbers", "submissions"):
            op.execute(f'ALTER TABLE bench_entries ALTER COLUMN "{column}" SET STORAGE EXTERNAL')
    op.drop_index("ix_bench_practice_practice", table_name="bench_practice")
    op.drop_table("bench_practice")
    op.execute(QUEUE_ALL)


def downgrade() -> None:
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
    op.drop_table("bench_entries")
    with op.batch_alter_table("bench_summary") as batch:
        batch.drop_column("flagged")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("counts_verdict")
        batch.drop_column("counts")
    op.execute(QUEUE_ALL)
