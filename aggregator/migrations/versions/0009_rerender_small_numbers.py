"""mark every benchmark group stale: the withheld note in stored views is rendered again

Revision ID: 0009
Revises: 0008

A practice whose counts the peer rule withholds carries a note in its stored peer entries
(bench_practice.peer_json and the practice's view of it): it said "small numbers: not shown to
peers", which a network lead, who is no peer, also read. The note now says what is withheld
(render.SMALL_NUMBERS). As 0008 did, this revision puts every (indicator, period) with a summary
on the stale queue, so the refresher renders each again; nothing is deleted, and a group not yet
recomputed is recomputed by its first read. The downgrade leaves the queue as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
