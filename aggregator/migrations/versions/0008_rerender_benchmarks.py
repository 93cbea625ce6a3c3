"""mark every benchmark group stale: their stored views are rendered again

Revision ID: 0008
Revises: 0007

The refresh stores each practice's entry as JSON (bench_practice.item_json and peer_json) so a
national funnel is assembled by string joins. Release 0008 changed what a network lead sees of
a practice outside its PCN (its rate and intervals to whole points, no z: docs/disclosure.md),
so every stored peer_json is out of date. This revision puts every (indicator, period) with a
summary on the stale queue; the background refresher, or the first read of each, recomputes it
from the cells. Nothing is deleted: until a group is recomputed its reads recompute it first.
The downgrade leaves the queue as it is (a stale group is recomputed, never wrong).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # bench_stale's primary key is (indicator, period_start, period_end): groups already queued
    # keep their mark, and the rest join the queue with mark 1.
    op.execute(
        sa.text(
            "INSERT INTO bench_stale (indicator, period_start, period_end, mark, marked_at) "
            "SELECT s.indicator, s.period_start, s.period_end, 1, CURRENT_TIMESTAMP "
            "FROM bench_summary s WHERE NOT EXISTS (SELECT 1 FROM bench_stale q "
            "WHERE q.indicator = s.indicator AND q.period_start = s.period_start "
            "AND q.period_end = s.period_end)"
        )
    )


def downgrade() -> None:
    pass
