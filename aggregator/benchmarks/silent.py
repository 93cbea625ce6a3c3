"""Registered practices that sent nothing for a period: without this they would simply be
missing from every view, as if they were not in the network at all.

A viewer is told the names only of the practices it may identify (a network lead their PCN's,
an admin every one, a practice only itself); of the others, only how many.
"""

from __future__ import annotations

from typing import TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Submission, table_of
from .listing import Period, period_of, resolve
from .peers import PeerGroupRef, resolve_group
from .viewer import PracticeLabel, Viewer


class NotSubmitted(TypedDict):
    period: Period
    peer_group: PeerGroupRef
    #: registered practices in the peer group (the network by default)
    registered: int
    #: how many of them sent nothing for the period
    count: int
    #: those of them the viewer may identify, by name
    practices: list[PracticeLabel]


def not_submitted(
    session: Session,
    viewer: Viewer,
    period: str | None = None,
    peer: str | None = None,
    group: str | None = None,
) -> NotSubmitted:
    """The registered practices (of the peer group, else the network) with no accepted
    submission in effect for the period."""
    start, end = resolve(session, period)
    pg = resolve_group(viewer, peer, group)
    # From the submissions (index ix_submissions_effective_period: a national month is 6,500
    # rows), not from the stored benchmarks, whose key leads with the indicator, so asking for
    # every practice of a period read every stored row of every period (6.24 million for 24
    # national months) on each overview and indicator page.
    t = table_of(Submission)
    sent = set(
        session.scalars(
            select(t.c.practice_ods)
            .where(t.c.effective.is_(True), t.c.period_end == end, t.c.period_start == start)
            .distinct()
        )
    )
    scope = set(viewer.practices) if pg.members is None else set(pg.members)
    silent = sorted(scope - sent)
    named = [viewer.label(ods) for ods in silent if viewer.identifies(ods)]
    named.sort(key=lambda p: (p["name"], p["id"]))
    return {
        "period": period_of(start, end),
        "peer_group": pg.as_dict(),
        "registered": len(scope),
        "count": len(silent),
        "practices": named,
    }
